"""Means over queries, weighted, so that a figure has one definition for two uses.

The figures an arm comparison states with an interval (pass@1, acc@H, coverage@H, tail_ratio,
distinct_paths) are averages over queries. Their functions take one row per query and optional
weights: without weights they give the round's figure as `metrics.json` holds it; with a
(resamples, queries) matrix of how often each query was drawn they give the figure of every
bootstrap resample at once (selftrain/metrics/bootstrap.py), from the same code.
"""

from __future__ import annotations

import numpy as np


def weighted_mean(values: np.ndarray, where: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> float | np.ndarray | None:
    """Mean of `values` over the queries `where` selects (all when None).

    weights None: a float, None when no query is selected. weights of shape (B, n): one mean per
    row, each query counted as often as its weight says; NaN where a row selects no weight.
    """
    values = np.asarray(values, dtype=np.float64)
    if where is not None:
        values = values[where]
        weights = None if weights is None else weights[:, where]
    if weights is None:
        return float(values.mean()) if len(values) else None
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights * values).sum(-1) / weights.sum(-1)


def weighted_sum(values: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """Sum of `values` over queries, each counted `weights` times (once when weights is None)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.sum()) if weights is None else weights @ values
