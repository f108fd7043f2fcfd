"""`prm`: a process reward model. This module holds the critic and selftrain's own PRM format:
a causal-LM backbone reads the query and the steps; a linear head at the last token of each
step (its trailing "\\n") gives P(step ok) through a sigmoid. Published PRMs from the hub are
read by `critics.hub_prm`, chosen with `critic.args.mode`.

One forward pass scores every step of a sample, which makes the PRM far cheaper than the
generative `lm` critic, at the price of no explanation text. A PRM folder is a plain HF
`save_pretrained` backbone (any `AutoModel`) plus `prm_head.pt` and `prm.json`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from critics.hub_prm import FORMATS, HubPRM
from critics.protocol import Critique, CritiqueRequest, StepVerdict
from critics.registry import CriticLoadError
from selftrain.device import best_device
from selftrain.train.optim import adamw_with_schedule, optimizer_step
from selftrain.train.sft import pad_right

STEP_SUFFIX = "\n"
"""Each step is fed as `step + STEP_SUFFIX`; the score is read at that piece's last token."""
HEAD_FILE = "prm_head.pt"
META_FILE = "prm.json"


class PRMModel(torch.nn.Module):
    """Backbone hidden states -> one logit per position (read only at step ends)."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1)


@dataclass
class PRMExample:
    """One labelled sample: `labels[i]` says whether step i is ok (None: unknown, not learned)."""

    prompt: str
    steps: list[str]
    labels: list[bool | None]


@dataclass
class PRMTrainSettings:
    steps: int = 300
    lr: float = 2e-3
    batch_size: int = 32
    warmup_ratio: float = 0.05
    max_length: int = 512
    balanced: bool = True
    """Weigh ok steps by (#flagged / #ok) in the loss. Policy samples are mostly wrong, and
    an unweighted PRM learns to flag every step, which in the loop rejects every correct one."""
    seed: int = 0


def encode(tokenizer: Any, prompt: str, steps: Sequence[str],
           max_length: int | None = None) -> tuple[list[int], list[int]]:
    """input_ids and the position of each step's last token.

    Pieces are tokenized one by one so step ends are exact for any tokenizer. With
    `max_length`, ids are cut there and steps ending beyond it get no position (training only:
    at inference every step needs a score).
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ends = []
    for step in steps:
        ids = ids + tokenizer(step + STEP_SUFFIX, add_special_tokens=False)["input_ids"]
        ends.append(len(ids) - 1)
    if max_length is not None:
        ids = ids[:max_length]
        ends = [e for e in ends if e < max_length]
    return ids, ends


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: step-end positions stay absolute, and causal attention never looks right."""
    ids, mask = pad_right(rows, pad_id)
    return ids.to(device), mask.to(device)


def build_prm(backbone: str | Path | torch.nn.Module) -> PRMModel:
    """A PRM with a fresh head on `backbone`: a module, or an HF folder of any causal LM
    (`AutoModel` drops its LM head and keeps the transformer)."""
    if not isinstance(backbone, torch.nn.Module):
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(backbone), dtype=torch.float32)
    return PRMModel(backbone)


def train_prm(model: PRMModel, tokenizer: Any, examples: Sequence[PRMExample],
              settings: PRMTrainSettings, device: torch.device,
              on_step: Callable[[int, int, float], None] | None = None) -> dict[str, float]:
    """BCE on the step-end logits of labelled steps; AdamW, warmup then cosine decay to 10%."""
    encoded = []
    for ex in examples:
        ids, ends = encode(tokenizer, ex.prompt, ex.steps, settings.max_length)
        kept = [(e, float(lab)) for e, lab in zip(ends, ex.labels) if lab is not None]
        if kept:
            encoded.append((ids, kept))
    if not encoded:
        return {"steps": 0, "loss": float("nan")}
    ok = sum(lab for _, kept in encoded for _, lab in kept)
    flagged = sum(len(kept) for _, kept in encoded) - ok
    pos_weight = torch.tensor(flagged / ok if settings.balanced and ok and flagged else 1.0,
                              device=device)
    model.to(device).train()
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    total = settings.steps
    # weight decay 0.01 is AdamW's default, which this loop has always used
    optim, sched = adamw_with_schedule(model, settings.lr, 0.01, total, settings.warmup_ratio)
    order: list[int] = []
    losses: list[float] = []
    for step in range(total):
        if len(order) < settings.batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        batch = [encoded[i] for i in order[: settings.batch_size]]
        del order[: settings.batch_size]
        ids, mask = _pad([b[0] for b in batch], tokenizer.pad_token_id, device)
        rows = torch.tensor([r for r, b in enumerate(batch) for _ in b[1]], device=device)
        cols = torch.tensor([e for b in batch for e, _ in b[1]], device=device)
        target = torch.tensor([lab for b in batch for _, lab in b[1]], device=device)
        logits = model(ids, mask)[rows, cols]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target,
                                                                    pos_weight=pos_weight)
        loss.backward()
        optimizer_step(model, optim, sched)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, total, losses[-1])
    model.eval()
    tail = losses[-max(1, total // 10):]
    return {"steps": total, "loss": sum(tail) / len(tail), "ok_weight": float(pos_weight)}


@torch.inference_mode()
def score_steps(model: PRMModel, tokenizer: Any, items: Sequence[tuple[str, Sequence[str]]],
                batch_size: int = 64) -> list[list[float]]:
    """P(ok) of every step of every (prompt, steps) pair, in order."""
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(items), batch_size):
        encoded = [encode(tokenizer, p, s) for p, s in items[start : start + batch_size]]
        ids, mask = _pad([e[0] for e in encoded], tokenizer.pad_token_id, device)
        probs = torch.sigmoid(model(ids, mask).float()).cpu()
        out += [probs[i, ends].tolist() for i, (_, ends) in enumerate(encoded)]
    return out


def save_prm(model: PRMModel, tokenizer: Any, out: str | Path, threshold: float = 0.5,
             extra: dict[str, Any] | None = None) -> Path:
    """Write a PRM folder: the backbone and tokenizer (save_pretrained), the head, prm.json."""
    from selftrain.models.tiny_model import portable_tokenizer_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    torch.save({k: v.detach().cpu() for k, v in model.head.state_dict().items()}, out / HEAD_FILE)
    meta = {"threshold": threshold, "step_suffix": STEP_SUFFIX,
            "score_at": "last token of each step", "format": "prompt + (step + step_suffix) * n",
            "version": 1, **(extra or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def load_prm(path: str | Path, device: torch.device | None = None) -> tuple[PRMModel, Any, dict]:
    """(model on `device`, tokenizer, prm.json contents) of a folder written by `save_prm`."""
    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / HEAD_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a PRM folder (it needs {META_FILE} and {HEAD_FILE} next to the HF "
            f"backbone); train one with `selftrain train-critic`"
        )
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("step_suffix", STEP_SUFFIX) != STEP_SUFFIX:
        raise ValueError(f"{path / META_FILE}: step_suffix {meta['step_suffix']!r} is not the "
                         f"{STEP_SUFFIX!r} this version of the prm critic feeds")
    from transformers import AutoTokenizer

    model = build_prm(path)
    model.head.load_state_dict(torch.load(path / HEAD_FILE, map_location="cpu", weights_only=True))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device or best_device()).eval(), tokenizer, meta


class SelftrainPRM:
    """A folder written by `save_prm`, scoring requests by their prompt and steps."""

    def __init__(self, path: str | Path) -> None:
        self.model, self.tokenizer, self.meta = load_prm(path)

    def score(self, requests: Sequence[CritiqueRequest], batch_size: int) -> list[list[float]]:
        return score_steps(self.model, self.tokenizer, [(r.query.prompt, r.steps) for r in requests],
                           batch_size)


class PRMCritic:
    """Flags a step when the PRM's P(ok) is below `threshold`.

    `mode` says which PRM: "selftrain" (default), a folder written by `selftrain train-critic`
    (threshold None: the one in its prm.json); or a published PRM by its convention,
    "step_tag" | "token_classification" | "chat_turns" (see `critics.hub_prm`; threshold None:
    0.5), whose own args (tokens, templates, dtype, trust_remote_code) pass through.
    """

    name = "prm"

    def __init__(self, task: Any = None, *, model_path: str, mode: str = "selftrain",
                 threshold: float | None = None, batch_size: int = 64, **mode_args: Any) -> None:
        self.task = task
        self.batch_size = batch_size
        if mode == "selftrain":
            if mode_args:
                raise TypeError(f"mode selftrain takes no {', '.join(sorted(mode_args))} (its args: "
                                f"model_path, threshold, batch_size)")
            self.scorer: SelftrainPRM | HubPRM = SelftrainPRM(model_path)
            default = self.scorer.meta.get("threshold", 0.5)
        elif mode in FORMATS:
            self.scorer = HubPRM(str(model_path), mode, **mode_args)
            default = 0.5
        else:
            raise CriticLoadError(f"prm critic: critic.args.mode must be selftrain, "
                                  f"{', '.join(FORMATS)}; got {mode!r}")
        self.threshold = float(default if threshold is None else threshold)

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        out = []
        for req, probs in zip(requests, self.scorer.score(requests, self.batch_size)):
            verdicts = [
                StepVerdict(ok=p >= self.threshold, score=p,
                            feedback="ok" if p >= self.threshold else f"likely wrong (PRM P(ok)={p:.2f})")
                for p in probs
            ]
            out.append(Critique(sample_id=req.sample_id, critic=self.name, verdicts=verdicts))
        return out
