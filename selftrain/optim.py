"""The optimizer, learning-rate schedule and update step that the SFT loop (`selftrain.sft`)
and the PRM loop (`critics.prm`) share, so the two train alike and change together."""

from __future__ import annotations

import math

import torch


def adamw_with_schedule(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_ratio: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW, and a schedule stepped once per update: linear warmup over
    `warmup_ratio * total_steps` steps (at least one), then cosine decay to 10% of `lr`."""
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, int(warmup_ratio * total_steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return optim, torch.optim.lr_scheduler.LambdaLR(optim, schedule)


def optimizer_step(model: torch.nn.Module, optim: torch.optim.Optimizer,
                   sched: torch.optim.lr_scheduler.LRScheduler, max_grad_norm: float = 1.0) -> None:
    """Clip the gradient norm, update, advance the schedule, clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optim.step()
    sched.step()
    optim.zero_grad(set_to_none=True)
