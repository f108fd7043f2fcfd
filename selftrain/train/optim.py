"""The optimizer, learning-rate schedule and update step that the SFT loop (`selftrain.train.sft`)
and the PRM loop (`critics.prm`) share, so the two train alike and change together."""

from __future__ import annotations

import torch


def adamw_with_schedule(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_ratio: float,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW, and transformers' schedule stepped once per update: linear warmup over
    `warmup_ratio * total_steps` steps (at least one; the first step already at lr/warmup), then
    cosine decay that reaches 10% of `lr` on the last step."""
    # imported here: `critics.prm` imports this module, and listing critics stays light
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    optim = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    sched = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optim, num_warmup_steps=max(1, int(warmup_ratio * total_steps)),
        num_training_steps=total_steps, min_lr_rate=0.1,
    )
    return optim, sched


def optimizer_step(model: torch.nn.Module, optim: torch.optim.Optimizer,
                   sched: torch.optim.lr_scheduler.LRScheduler, max_grad_norm: float = 1.0) -> None:
    """Clip the gradient norm, update, advance the schedule, clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optim.step()
    sched.step()
    optim.zero_grad(set_to_none=True)


def state_mib(model: torch.nn.Module, optim: torch.optim.Optimizer) -> dict[str, float]:
    """What training holds on this rank besides activations, in MiB: its parameters, their
    gradients (one per trainable parameter at the peak, between backward and step) and the
    optimizer's state. Under FSDP each counts only this rank's shard (the local part of each
    DTensor), so the figures show what sharding saves, free of allocator and RSS noise."""
    params = list(model.parameters())
    param = sum(_local_bytes(p) for p in params)
    grad = sum(_local_bytes(p) for p in params if p.requires_grad)
    state = sum(_local_bytes(t) for s in optim.state.values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.dim() > 0)  # not Adam's step counters
    mib = {"param_mib": param, "grad_mib": grad, "optim_mib": state}
    return {k: round(v / 2**20, 3) for k, v in mib.items()} | {
        "state_mib": round((param + grad + state) / 2**20, 3)}


def _local_bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard on this rank
    return local.numel() * local.element_size()
