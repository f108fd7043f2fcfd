"""Graded tasks: a score in [0, 1] per completion and a pass threshold (the `Graded` ability of
selftrain/tasks/base.py).

A graded task's `correct` means *passing*: score >= `pass_threshold` (an unknown score never
passes), so every figure that counts correct samples counts passing ones. The score itself is
kept on each sample and eval row (`score`, None when unknown) for the top-m filter, the
`score_mean` figures and a preference-pair builder (`sample_score`).

Scoring goes one query at a time, over all completions the call drew for it: a task with
`score_batch(query, completions)` (a score that depends on the other samples of the same prompt,
such as a distinctiveness bonus) is scored that way; otherwise `score` per completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selftrain.tasks.base import Task, abilities
from selftrain.types import Query, Sample


def scores(task: Task, query: Query, completions: Sequence[str]) -> list[float | None] | None:
    """The scores of `completions` of `query` (None for the list when the task is not graded)."""
    graded = abilities(task).graded
    if graded is None:
        return None
    batch = getattr(task, "score_batch", None)
    out = batch(query, list(completions)) if batch is not None else [
        graded.score(query, c) for c in completions]
    return [None if v is None else float(v) for v in out]


def passes(task: Task, score: float | None) -> bool:
    """Whether `score` passes the graded task's threshold (None: unknown, never)."""
    graded = abilities(task).graded
    assert graded is not None, "passes() is for graded tasks"
    return score is not None and score >= graded.pass_threshold


def sample_score(sample: Sample | dict[str, Any]) -> float | None:
    """A sample's score (a `Sample` or a row of samples.parquet / eval.parquet); None when the
    task is not graded or the score is unknown. The seam for preference pairs: chosen = the
    higher score."""
    value = sample.get("score") if isinstance(sample, dict) else sample.score
    if value is None or value != value:  # NaN from a parquet column of floats
        return None
    return float(value)
