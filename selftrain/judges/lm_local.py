"""`lm-local`: the LM judge in-process, a causal LM loaded with transformers from a hub id or a
folder (no server). Each pair of distinct completions is one prompt (the `lm` judge's
template); the pair is equivalent when the model's next-token logit of the first token of
`yes` is above that of `no` (greedy decoding of the first answer token, without generating).
Classes are the connected components of the equivalent pairs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from selftrain.judges import JudgeLoadError, classes_from_pairs
from selftrain.judges.lm import TEMPLATE


@functools.cache
def _load(model: str, device: str) -> tuple[Any, Any]:
    # Imported here: transformers is paid for only when this judge is configured.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"  # the last position of every row is its prompt's end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, AutoModelForCausalLM.from_pretrained(model).to(device).eval()


class LocalLMJudge:
    """`model`: hub id or folder of a causal LM; `yes` / `no`: the answers whose first tokens
    are compared (" yes" / " no" suit BPE tokenizers that fold the space into the word)."""

    name = "lm-local"

    def __init__(self, task: Any = None, *, model: str, template: str = TEMPLATE,
                 yes: str = " yes", no: str = " no", batch_size: int = 16,
                 device: str = "cpu") -> None:
        if "{a}" not in template or "{b}" not in template:
            raise JudgeLoadError(f"lm-local judge: judge.args.template needs the fields {{a}} "
                                 f"and {{b}}, got {template!r}")
        self.model, self.template, self.yes, self.no = model, template, yes, no
        self.batch_size, self.device = batch_size, device

    def answer_tokens(self, tokenizer: Any) -> tuple[int, int]:
        """The first token ids of `yes` and `no`; they must differ."""
        yes, no = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (self.yes, self.no))
        if yes == no:
            raise JudgeLoadError(f"lm-local judge: judge.args.yes {self.yes!r} and no {self.no!r} "
                                 f"start with the same token of {self.model}; pick other words")
        return yes, no

    def yes_margin(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """logit(first token of yes) − logit(first token of no) after each pair's prompt."""
        import torch

        try:
            tokenizer, net = _load(self.model, self.device)
        except OSError as err:
            raise JudgeLoadError(f"lm-local judge: cannot load {self.model!r} ({err}); set "
                                 f"judge.args.model to a hub id or a local folder") from err
        yes, no = self.answer_tokens(tokenizer)
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            prompts = [self.template.format(a=a, b=b) for a, b in pairs[start : start + self.batch_size]]
            enc = tokenizer(prompts, padding=True, return_tensors="pt").to(self.device)
            # positions count real tokens only, so left padding does not shift them
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = net(**enc, position_ids=positions).logits[:, -1].float()
            out += (logits[:, yes] - logits[:, no]).tolist()
        return out

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        return classes_from_pairs(groups, lambda pairs: [m > 0 for m in self.yes_margin(pairs)])
