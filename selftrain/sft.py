"""Supervised finetuning with the loss on completion tokens only.

One loop serves the seed SFT of the embedded base model (in-process) and each round's
finetune (inside Ray Train workers, where the model arrives wrapped in DDP). Prompt tokens and
masked completion spans (agent observations) get label -100, so only what the policy wrote is
learned.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class SFTExample:
    prompt: str
    completion: str
    masked_spans: list[tuple[int, int]] = field(default_factory=list)
    """Character spans [start, end) of `completion` that are context, not policy output."""


@dataclass
class SFTSettings:
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 256
    max_steps: int | None = None
    seed: int = 0


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


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


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

    Returns stats of this rank: steps, mean loss of the last epoch, and completion tokens seen
    (`train_tokens` counts each training-set completion token once per epoch and rank).
    """
    if not examples:
        return {"steps": 0, "loss": float("nan"), "tokens": 0}
    encoded = [tokenize_example(tokenizer, ex, settings.max_length) for ex in examples]
    rng = random.Random(settings.seed)
    per_rank = math.ceil(len(encoded) / world_size)
    steps_per_epoch = math.ceil(per_rank / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    optim = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_ratio * total))

    def schedule(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    model.train()
    step, tokens, losses = 0, 0, []
    while step < total:
        order = list(range(len(encoded)))
        rng.shuffle(order)  # same permutation on every rank (same seed), then sharded
        order += order[: per_rank * world_size - len(order)]  # pad so ranks get equal shards
        shard = order[rank::world_size]
        losses = []
        for b in range(0, len(shard), settings.batch_size):
            if step >= total:
                break
            batch = collate([encoded[i] for i in shard[b : b + settings.batch_size]],
                            tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            tokens += int((batch["labels"] != IGNORE).sum())
            losses.append(loss.item())
            step += 1
            if on_step is not None:
                on_step(step, total, losses[-1])
    model.eval()
    return {"steps": step, "loss": sum(losses) / max(1, len(losses)), "tokens": tokens}
