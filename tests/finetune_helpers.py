"""A tiny policy, a training set and a one-rank process group: a round's finetune in-process,
as scripts/gpu_check.py runs it, for tests that need no Ray."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from selftrain.config import TinyModelConfig
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.runfolder.folder import write_parquet


def tiny_policy(out: Path, seed: int = 0, noise: float = 0.0) -> Path:
    """An untrained tiny Llama (tied embeddings, char tokenizer) saved like a base model.
    `noise` enlarges its random weights: at the default init every seed mostly echoes the
    prompt's last character, with noise 0.1 greedy texts vary (tests/test_backend_contract.py)."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=seed), len(tokenizer), tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return out


def sums_parquet(out: Path) -> Path:
    """train.parquet of 64 sums ("3+4=" -> "7"); one row masks part of its completion."""
    rows = [{"prompt": f"{a}+{b}=", "completion": f"{a + b}", "loss_mask": None}
            for a in range(8) for b in range(8)]
    rows[0] |= {"completion": "0 (zero)", "loss_mask": [[1, 8]]}
    write_parquet(out, rows)
    return out


@contextlib.contextmanager
def one_rank_group(tmp: Path) -> Iterator[None]:
    """This process as rank 0 of a one-rank gloo process group (file:// rendezvous)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def logits(model: torch.nn.Module, texts: list[str], tokenizer) -> torch.Tensor:
    ids = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**ids).logits
