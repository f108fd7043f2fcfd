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
    data: dict[str, Any] = field(default_factory=dict)


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
    origin: str = "sample"  # "sample" or "refine"
    parent_id: str | None = None
    num_tokens: int = 0
    loss_mask: list[list[int]] | None = None
    """Character spans [start, end) of `completion` excluded from the SFT loss (agent observations)."""

    def row(self) -> dict[str, Any]:
        return asdict(self)
