"""The `critic_train` section of the config (`selftrain train-critic`), apart from the run's
sections in `selftrain.config`, which re-exports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class CriticTrainConfig:
    """`selftrain train-critic`: sizes and steps. The defaults train both critics in about 1-3
    minutes on 2 CPU cores; raise `prm_steps`/`lm_steps` and the model sizes for a better critic."""

    oracle: str | None = None
    """Registry name of the critic that labels every step (None: "<task.name>-oracle")."""
    num_samples: int = 8
    """Policy samples per training query (temperature `temperature`)."""
    max_queries: int | None = None
    """Use only the first this many of `task.queries("train")` (None: all)."""
    temperature: float = 1.0
    max_new_tokens: int = 48
    gen_batch_size: int = 128
    """Sequences (prompts times samples) per generate call."""
    heldout_fraction: float = 0.25
    """Share of the queries of each difficulty held out for evaluation."""
    init: Literal["fresh", "policy"] = "fresh"
    """Critic weights to start from: "fresh" (a new tiny char Llama of the sizes below) or
    "policy" (the base policy's own weights and tokenizer: it already reads the task)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 192
    max_length: int = 768
    """Longest training sequence in tokens (characters, for the char tokenizer)."""
    prm_steps: int = 1000
    prm_lr: float = 2e-3
    prm_batch_size: int = 32
    prm_balanced: bool = True
    """Weigh the (rarer) ok steps up in the PRM loss; see `critics.prm.PRMTrainSettings`."""
    threshold: float = 0.5
    lm_steps: int = 600
    lm_lr: float = 3e-3
    lm_batch_size: int = 32
    max_explanation: int = 32
    """Characters of oracle feedback kept in the lm critic's training targets (whole words):
    the explanation dominates the length, hence the cost, of its training sequences."""
    eval_batch_size: int = 64
    seed: int | None = None
    """Seed of sampling, the held-out split and training (None: the experiment's `seed`)."""
