"""The records that cross stage boundaries. Each maps onto one row of a run-folder parquet file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Query:
    """One task query. `data` holds what the task needs to check answers (numbers, gold, ...)."""

    query_id: str
    difficulty: int
    prompt: str
    """What the policy sees: the task's prompt, or with `model.chat_template` its user message
    rendered in the policy's chat template (generation continues inside the assistant turn)."""
    data: dict[str, Any] = field(default_factory=dict)
    user_message: str | None = None
    """With a chat template: the user turn that `prompt` renders (a rewrite refinement asks
    again in a new user turn built from it); None when `prompt` is the task's own text."""


@dataclass
class Sample:
    """One policy sample or refinement (a row of `samples.parquet`)."""

    sample_id: str
    query_id: str
    difficulty: int
    prompt: str
    completion: str
    steps: list[str]
    answer: str | None
    correct: bool
    origin: str = "sample"
    """"sample" (first pass), "extra" (a later wave of balanced or distinct sampling) or
    "refine" (a critique-guided repair)."""
    parent_id: str | None = None
    num_tokens: int = 0
    loss_mask: list[list[int]] | None = None
    """Character spans [start, end) of `completion` excluded from the SFT loss (agent observations)."""

    def row(self) -> dict[str, Any]:
        return asdict(self)
