"""The judges that need no extra model: the task's solution key and MiniLM cosine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selftrain.judges import JudgeLoadError, classes_from_pairs, labels_of
from selftrain.metrics.diversity import solution_keys
from selftrain.metrics.embed import Embedder


class SolutionKeyJudge:
    """Two completions are one class when the task's `solution_key` of their steps is equal
    (the key `distinct_paths` counts): free, exact, and the default."""

    name = "solution-key"

    def __init__(self, task: Any = None) -> None:
        self.task = task

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        key = self.task.solution_key if self.task is not None else None
        split = self.task.split_steps if self.task is not None else None
        return [labels_of(solution_keys(list(g), key, split)) for g in groups]


class EmbeddingJudge:
    """Two completions are equivalent when the cosine of their all-MiniLM-L6-v2 embeddings is
    at least `threshold`; classes are the connected components. One MiniLM call per round.
    precision: MiniLM's arithmetic (selftrain/metrics/embed.py); fp32 by default, since a
    cosine near the threshold decides a class."""

    name = "embedding"

    def __init__(self, task: Any = None, threshold: float = 0.9,
                 embedder: Embedder | None = None, precision: str = "fp32") -> None:
        if not -1.0 <= threshold <= 1.0:
            raise JudgeLoadError(f"embedding judge: judge.args.threshold must lie in [-1, 1], "
                                 f"got {threshold}")
        self.threshold = threshold
        try:
            self.embedder = embedder or Embedder(precision=precision)
        except ValueError as e:
            raise JudgeLoadError(f"embedding judge: judge.args.precision: {e}") from None

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        texts = sorted({t for g in groups for t in g})
        if not texts:
            return [[] for _ in groups]
        row = {t: i for i, t in enumerate(texts)}
        emb = self.embedder.encode(texts).astype(np.float64)

        def same(pairs: list[tuple[str, str]]) -> list[bool]:
            return [float(emb[row[a]] @ emb[row[b]]) >= self.threshold for a, b in pairs]

        return classes_from_pairs(groups, same)
