"""Published process reward models, scored the way their authors publish (the `prm` critic's
hub modes). One class per convention says how a sample becomes token ids, which positions
hold a step's score and how logits there become P(step ok); `HubPRM` loads the model and
scores batches the same way for all three:

- `StepTag`, mode `step_tag` (peiyi9979/math-shepherd-mistral-7b-prm, model card usage): a
  causal LM reads `f"{question} {output}"` where output is `"Step i: <step> ки"` lines joined by
  "\\n"; P(ok) is the softmax over the logits of the good/bad tokens ("+"/"-") at each tag.
- `SeparatorClassifier`, mode `token_classification` (Qwen/Qwen2.5-Math-PRM-7B, model card
  usage and `make_step_rewards`): a chat of system, user (question) and assistant (steps
  each followed by "<extra_0>") is encoded; P(ok) is the softmax of the two-class logits at
  each separator, class 1.
- `ChatTurns`, mode `chat_turns` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, RLHF-Reward-Modeling
  math README and evaluation code): step k is user turn k (the first one prefixed with the
  question and a space), each answered by an assistant "+"; P(ok) of step k is the softmax
  over the "+"/"-" logits at the position that predicts the assistant's reply to turn k.

The question is `question_template` filled from the query ({prompt}, {data[...]}). Tokens are
checked when the critic is built: a tag, candidate or separator that is not one token of the
tokenizer, or that does not survive in context, is an error naming the arg.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from critics.protocol import CritiqueRequest
from critics.registry import CriticLoadError
from selftrain.device import best_device, dtype_of
from selftrain.types import Query

DTYPES = ("float32", "bfloat16", "float16")
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system prompt of the Qwen2.5-Math-PRM model card."""


class StepFormat(Protocol):
    """How one published PRM reads a sample."""

    loader: str
    """"causal_lm" or "token_classification": which model head the convention scores with."""

    def encode(self, tokenizer: Any, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """input_ids and the position of each step's score, one per step."""
        ...

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        """P(ok) from the logits at the score positions (positions x vocab or classes)."""
        ...


def token_id(tokenizer: Any, text: str, arg: str, where: str) -> int:
    """The id of `text` when the tokenizer has it as exactly one known token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise CriticLoadError(
            f"prm critic: critic.args.{arg} {text!r} is not one token of the tokenizer at {where} "
            f"(it encodes to {pieces}); set {arg} to a token in its vocabulary")
    return ids[0]


def candidate_ids(tokenizer: Any, good: str, bad: str, where: str) -> tuple[int, int]:
    """The ids of the good and bad candidate tokens (args `good_token`, `bad_token`)."""
    return token_id(tokenizer, good, "good_token", where), token_id(tokenizer, bad, "bad_token", where)


def _candidates(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    return logits[:, [good, bad]].float().softmax(dim=-1)[:, 0]


@dataclass
class StepTag:
    """Math-Shepherd: a tag token after each step, scored by the good/bad candidate tokens."""

    tokenizer: dataclasses.InitVar[Any]
    where: dataclasses.InitVar[str]
    step_tag: str = "ки"
    good_token: str = "+"
    bad_token: str = "-"
    step_template: str = "Step {i}: {step}"
    """Each step as the model was trained to read it; fields {i} (from 1) and {step}."""
    loader = "causal_lm"

    def __post_init__(self, tokenizer: Any, where: str) -> None:
        self.tag_id = token_id(tokenizer, self.step_tag, "step_tag", where)
        self.good_id, self.bad_id = candidate_ids(tokenizer, self.good_token, self.bad_token, where)

    def encode(self, tokenizer: Any, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        lines = [self.step_template.format(i=i, step=step.replace(self.step_tag, "")) + f" {self.step_tag}"
                 for i, step in enumerate(steps, 1)]
        ids = tokenizer.encode(f"{question} " + "\n".join(lines))
        return ids, [i for i, t in enumerate(ids) if t == self.tag_id]

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        return _candidates(logits, self.good_id, self.bad_id)


@dataclass
class SeparatorClassifier:
    """Qwen2.5-Math-PRM: two-class logits at a separator token after each step (class 1: ok)."""

    tokenizer: dataclasses.InitVar[Any]
    where: dataclasses.InitVar[str]
    separator: str = "<extra_0>"
    system: str | None = QWEN_MATH_SYSTEM
    """The system message (None: none)."""
    loader = "token_classification"

    def __post_init__(self, tokenizer: Any, where: str) -> None:
        self.sep_id = token_id(tokenizer, self.separator, "separator", where)
        _require_chat_template(tokenizer, "token_classification", where)

    def encode(self, tokenizer: Any, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        answer = "".join(step.replace(self.separator, "") + self.separator for step in steps)
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = tokenizer.encode(text)
        return ids, [i for i, t in enumerate(ids) if t == self.sep_id]

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != 2:
            raise ValueError(f"prm critic, mode token_classification: the model gives "
                             f"{logits.shape[-1]} logits per token; this mode reads two classes")
        return logits.float().softmax(dim=-1)[:, 1]


@dataclass
class ChatTurns:
    """RLHFlow: each step a user turn answered by the good token; scored where that reply is
    predicted. All steps are scored in one forward pass: turn k's rendering is a prefix of the
    whole conversation's (checked), and the model is causal."""

    tokenizer: dataclasses.InitVar[Any]
    where: dataclasses.InitVar[str]
    good_token: str = "+"
    bad_token: str = "-"
    loader = "causal_lm"

    def __post_init__(self, tokenizer: Any, where: str) -> None:
        _require_chat_template(tokenizer, "chat_turns", where)
        self.good_id, self.bad_id = candidate_ids(tokenizer, self.good_token, self.bad_token, where)

    def encode(self, tokenizer: Any, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        conversation: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            conversation.append({"role": "assistant", "content": self.good_token})
        ids = _render(tokenizer, conversation)
        positions, start = [], 0
        for k in range(len(steps)):
            turn = _render(tokenizer, conversation[: 2 * k + 2])
            replies = [i for i in range(start, len(turn)) if turn[i] == self.good_id]
            if ids[: len(turn)] != turn or not replies:
                raise ValueError(
                    f"prm critic, mode chat_turns: the chat template does not render turn {k + 1} "
                    f"as a prefix of the conversation ending in the reply {self.good_token!r} "
                    f"as one token; this mode needs a template that does")
            positions.append(replies[-1] - 1)
            start = len(turn)
        return ids, positions

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        return _candidates(logits, self.good_id, self.bad_id)


FORMATS: dict[str, type] = {"step_tag": StepTag, "token_classification": SeparatorClassifier,
                            "chat_turns": ChatTurns}


def _render(tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    """What `apply_chat_template(conversation)` tokenizes to (its template holds the special
    tokens), in the same form under transformers 4 and 5."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _require_chat_template(tokenizer: Any, mode: str, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise CriticLoadError(f"prm critic, mode {mode}: the tokenizer at {where} has no chat "
                              f"template, and this mode renders the sample as a chat")


def question_text(template: str, query: Query) -> str:
    """The question the PRM reads: `template` with {prompt} and {data[...]} from the query."""
    try:
        return template.format(prompt=query.prompt, data=query.data)
    except (KeyError, IndexError) as err:
        raise ValueError(f"prm critic: critic.args.question_template {template!r} names {err}, "
                         f"which query {query.query_id} lacks (its data has "
                         f"{sorted(query.data)})") from err


class HubPRM:
    """A published PRM (a hub id or a folder) and its convention, built from `critic.args`."""

    def __init__(self, model_path: str, mode: str, *, question_template: str = "{prompt}",
                 dtype: str = "float32", trust_remote_code: bool = False, **format_args: Any) -> None:
        from transformers import AutoTokenizer

        fmt = FORMATS[mode]
        known = [f.name for f in dataclasses.fields(fmt)]
        unknown = sorted(set(format_args) - set(known))
        if unknown:
            raise TypeError(f"mode {mode} takes no {', '.join(unknown)} (its args: model_path, "
                            f"threshold, batch_size, question_template, dtype, trust_remote_code, "
                            f"{', '.join(known)})")
        if dtype not in DTYPES:
            raise CriticLoadError(f"prm critic: critic.args.dtype must be one of {', '.join(DTYPES)}, "
                                  f"got {dtype!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.format: StepFormat = fmt(self.tokenizer, model_path, **format_args)
        self.question_template = question_template
        try:
            probe = self.format.encode(self.tokenizer, "1+1?", ["a = 1", "b = 2"])[1]
        except ValueError as err:
            raise CriticLoadError(f"{err} (tokenizer at {model_path})") from err
        if len(probe) != 2:
            raise CriticLoadError(
                f"prm critic, mode {mode}: two steps written in this mode's format give "
                f"{len(probe)} score positions with the tokenizer at {model_path} (the marker "
                f"merges with its neighbours); name another marker token in critic.args")
        self.model = load_model(model_path, self.format.loader, dtype, trust_remote_code)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    @torch.inference_mode()
    def score(self, requests: Sequence[CritiqueRequest], batch_size: int) -> list[list[float]]:
        """P(ok) of every step of every request, in order."""
        out: list[list[float]] = [[] for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.steps]  # no steps: nothing to read
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for i, probs in zip(batch, self._forward([self._encode(requests[i]) for i in batch])):
                out[i] = probs
        return out

    def _encode(self, r: CritiqueRequest) -> tuple[list[int], list[int]]:
        question = question_text(self.question_template, r.query)
        ids, positions = self.format.encode(self.tokenizer, question, list(r.steps))
        if len(positions) != len(r.steps):
            raise ValueError(f"prm critic: sample {r.sample_id} has {len(r.steps)} steps but "
                             f"its encoding has {len(positions)} score positions")
        return ids, positions

    def _forward(self, batch: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """One padded forward pass; P(ok) at each row's positions."""
        device = next(self.model.parameters()).device
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (row, _) in enumerate(batch):  # right padding keeps positions absolute
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device))[0]
        rows = [i for i, (_, pos) in enumerate(batch) for _ in pos]
        cols = [p for _, pos in batch for p in pos]
        flat = self.format.prob(logits[rows, cols]).cpu().tolist()
        out = []
        for _, pos in batch:
            out.append(flat[: len(pos)])
            flat = flat[len(pos):]
        return out


def load_model(path: str, loader: str, dtype: str, trust_remote_code: bool) -> torch.nn.Module:
    """The model as its card loads it, refusing one whose weights do not all come from the
    checkpoint (a silently random head would score noise)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

    if loader == "causal_lm":
        auto = AutoModelForCausalLM
    else:  # Qwen2.5-Math-PRM's own head class is reached through AutoModel and its remote code
        auto = AutoModel if trust_remote_code else AutoModelForTokenClassification
    try:
        model, info = auto.from_pretrained(path, dtype=dtype_of(dtype), output_loading_info=True,
                                           trust_remote_code=trust_remote_code)
    except ValueError as err:
        raise CriticLoadError(f"prm critic: loading {path} with {auto.__name__} failed: {err} "
                              f"(a model that ships its own code needs critic.args."
                              f"trust_remote_code: true)") from err
    missing = info.get("missing_keys") or []
    if missing:
        raise CriticLoadError(
            f"prm critic: {path} loaded as {auto.__name__} leaves {len(missing)} weights "
            f"untrained ({', '.join(sorted(missing)[:4])}): it is not a {loader} model. If it "
            f"ships its own modelling code, set critic.args.trust_remote_code: true")
    return model.to(best_device()).eval()
