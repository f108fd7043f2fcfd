"""Supervised finetuning with the loss on completion tokens only.

One loop serves the seed SFT of the embedded base model (in-process) and each round's
finetune (on the trainer ranks, where the model arrives wrapped in DDP or sharded by FSDP).
Prompt tokens and masked completion spans (agent observations) get label -100, so only what
the policy wrote is learned.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from selftrain.train.optim import adamw_with_schedule, optimizer_step, state_mib

IGNORE = -100


@dataclass
class SFTExample:
    prompt: str
    completion: str
    masked_spans: list[tuple[int, int]] = field(default_factory=list)
    """Character spans [start, end) of `completion` that are context, not policy output."""


@dataclass
class SFTSettings:
    """One SFT job's settings (a round's finetune takes them from `train.*`)."""

    seed: int = 0
    """Shuffling: every rank draws the same permutation of the examples, then its shard."""
    max_steps: int | None = None
    """Stop after this many steps (None: `epochs` full passes)."""
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 256


def tokenize_example(tokenizer, ex: SFTExample, max_length: int) -> tuple[list[int], list[int]]:
    """input_ids and labels; the completion (plus EOS) is learned except its masked spans."""
    ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(ids)
    pos = 0
    for start, end in sorted(ex.masked_spans) + [(len(ex.completion), len(ex.completion))]:
        learned = ex.completion[pos:start]
        if learned:
            piece = tokenizer(learned, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece
        masked = ex.completion[start:end]
        if masked:
            piece = tokenizer(masked, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += [IGNORE] * len(piece)
        pos = max(pos, end)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return ids[:max_length], labels[:max_length]


def pad_right(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right with `value` to the longest (width at least 1), and the mask of
    real tokens. Right padding keeps positions absolute (the PRM reads step ends by position)
    and causal attention never looks right, so padding changes no real token's output."""
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return out, mask


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids, attention = pad_right([ids for ids, _ in batch], pad_id)
    labels, _ = pad_right([lab for _, lab in batch], IGNORE)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def epoch_shard(n: int, rng: random.Random, rank: int, world_size: int) -> list[int]:
    """This rank's example indices for one epoch: the same shuffled order on every rank (same
    seed), padded so that every rank gets as many, then dealt out."""
    order = list(range(n))
    rng.shuffle(order)
    order += order[: math.ceil(n / world_size) * world_size - n]
    return order[rank::world_size]


class Batches(Protocol):
    """What one objective's step does on a batch of example indices, for `run_epochs`."""

    def new_epoch(self) -> None:
        """An epoch starts: the figures kept per epoch start again."""

    def loss(self, idx: list[int]) -> torch.Tensor:
        """The forward pass of examples `idx`: the scalar loss to backpropagate."""

    def done(self, loss: torch.Tensor) -> None:
        """After the update: count the batch's tokens and figures."""


def run_epochs(model: torch.nn.Module, n: int, batches: Batches, settings: SFTSettings,
               rank: int = 0, world_size: int = 1,
               on_step: Callable[[int, int, float], None] | None = None,
               ) -> tuple[int, torch.optim.Optimizer]:
    """The optimiser's loop that SFT and DPO share: `settings.epochs` passes over this rank's
    shard of `n` examples (the same number of steps on every rank, at most `max_steps`),
    AdamW with the warmup-cosine schedule, one clipped update per batch. Returns the steps
    taken and the optimizer (its state is part of the rank's memory figures)."""
    rng = random.Random(settings.seed)
    total = math.ceil(math.ceil(n / world_size) / settings.batch_size) * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    optim, sched = adamw_with_schedule(model, settings.lr, settings.weight_decay, total,
                                       settings.warmup_ratio)
    model.train()
    step = 0
    while step < total:
        shard = epoch_shard(n, rng, rank, world_size)
        batches.new_epoch()
        for b in range(0, len(shard), settings.batch_size):
            if step >= total:
                break
            loss = batches.loss(shard[b : b + settings.batch_size])
            loss.backward()
            optimizer_step(model, optim, sched)
            batches.done(loss)
            step += 1
            if on_step is not None:
                on_step(step, total, loss.item())
    model.eval()
    return step, optim


@dataclass
class _SFTBatches:
    """SFT's step: the model's own loss on the learned tokens; tokens and losses counted."""

    model: torch.nn.Module
    encoded: list[tuple[list[int], list[int]]]
    pad_id: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    _labels: torch.Tensor | None = None

    def new_epoch(self) -> None:
        self.losses = []

    def loss(self, idx: list[int]) -> torch.Tensor:
        batch = collate([self.encoded[i] for i in idx], self.pad_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self._labels = batch["labels"]
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.model(**batch).loss

    def done(self, loss: torch.Tensor) -> None:
        self.tokens += int((self._labels != IGNORE).sum())
        self.losses.append(loss.item())


def train_sft(
    model: torch.nn.Module,
    tokenizer,
    examples: Sequence[SFTExample],
    settings: SFTSettings,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    autocast_dtype: torch.dtype | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Run the SFT loop; every rank takes the same number of steps on its shard of the data.

    Returns stats of this rank: steps, mean loss of the last epoch, completion tokens seen
    (`train_tokens` counts each training-set completion token once per epoch and rank), and the
    memory its parameters, gradients and optimizer state take (`selftrain.train.optim.state_mib`).
    """
    if not examples:
        return {"steps": 0, "loss": float("nan"), "tokens": 0}
    encoded = [tokenize_example(tokenizer, ex, settings.max_length) for ex in examples]
    batches = _SFTBatches(model, encoded, tokenizer.pad_token_id, device, autocast_dtype)
    step, optim = run_epochs(model, len(encoded), batches, settings, rank, world_size, on_step)
    losses = batches.losses
    return {"steps": step, "loss": sum(losses) / max(1, len(losses)), "tokens": batches.tokens,
            **state_mib(model, optim)}
