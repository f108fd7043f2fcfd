"""`reward_model`: a transformers sequence-classification reward model, by hub id or folder.

The Hugging Face convention (the reward models of TRL and RewardBench): the prompt and the
response are one chat, user then assistant, rendered with the tokenizer's chat template, and
the reward is the logit of a one-label head at the sequence's last token. Its value here is
sigmoid((logit - shift) / scale), in [0, 1] as a graded task needs; `Score.raw` keeps the
logit. `shift` and `scale` place a model's reward scale (e.g. shift = the logit a borderline
answer gets) without changing the order of scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from selftrain.device import best_device
from selftrain.scorers.base import Score, ScorerLoadError


class RewardModelScorer:
    name = "reward_model"

    def __init__(self, model: str, shift: float = 0.0, scale: float = 1.0, batch_size: int = 8,
                 max_length: int = 2048, device: str | None = None,
                 dtype: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if scale <= 0:
            raise ScorerLoadError(f"reward_model scorer: scale must be > 0, got {scale}")
        # the weights' dtype: bfloat16 halves an 8B model's memory beside the policy on one GPU;
        # None loads them as transformers does (float32)
        torch_dtype = getattr(torch, dtype, None) if dtype else None
        if dtype and not isinstance(torch_dtype, torch.dtype):
            raise ScorerLoadError(f"reward_model scorer: dtype {dtype!r} is not a torch dtype; "
                                  f"use bfloat16, float16 or float32")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ScorerLoadError(f"reward_model scorer: the tokenizer of {model!r} has no chat "
                                  f"template; a reward model reads a chat (user, assistant)")
        self.model = AutoModelForSequenceClassification.from_pretrained(model,
                                                                        torch_dtype=torch_dtype)
        if self.model.config.num_labels != 1:
            raise ScorerLoadError(f"reward_model scorer: {model!r} has {self.model.config.num_labels} "
                                  f"labels; a reward model has a one-label head")
        self.device = device or best_device()
        self.model.to(self.device).eval()
        pad = self.tokenizer.pad_token_id
        # The head reads the last token that is not padding: padding must be a token the chat
        # never contains, else score one sequence at a time.
        self.batch_size = batch_size if pad is not None and pad != self.tokenizer.eos_token_id else 1
        if pad is not None:
            self.model.config.pad_token_id = pad
        self.shift, self.scale, self.max_length = shift, scale, max_length

    def text(self, prompt: str, completion: str) -> str:
        """The chat the model reads: the prompt as the user turn, the completion as the reply."""
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
            tokenize=False)

    @torch.no_grad()
    def logits(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        texts = [self.text(p, c) for p, c in zip(prompts, completions)]
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], add_special_tokens=False,
                                 padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            out += self.model(**enc).logits[:, 0].float().tolist()
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Score]:
        return [Score(sigmoid((x - self.shift) / self.scale), x)
                for x in self.logits(prompts, completions)]


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)
