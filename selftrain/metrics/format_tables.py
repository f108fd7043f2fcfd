"""The test split's format figures as functions of a per-query table, so arm comparisons state
them like the other figures: with a paired-bootstrap interval, `mde` and `seeds_needed`.

`eval_format_share/<name>`, `eval_format_entropy` and `eval_dominant_format_share`
(selftrain/metrics/formats.py) pool every test sample of a round. Pooled counts are sums over
test queries, so a resample of the queries (weights: how often each is drawn) gives the counts
`weights @ per-query counts`, and the figure follows from them as it does from the round's own
counts. Without weights the functions return exactly what metrics.json holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from selftrain.metrics.formats import NONE

COLUMN = "format/"
"""Prefix of the per-query count columns: `format/<name>` = that query's samples in format name."""

SHARE = "eval_format_share/"
POOLED_FIGURES = ("eval_dominant_format_share", "eval_format_entropy")

TableFigure = Callable[[pd.DataFrame, np.ndarray | None], float | np.ndarray | None]


def format_columns(evals: pd.DataFrame, format_of: Callable[[str], str | None]) -> pd.DataFrame:
    """query_id -> `format/<name>` counts of its test samples, one column per format seen."""
    names = [format_of(c) or NONE for c in evals["completion"]]
    counts = pd.crosstab(evals["query_id"].to_numpy(), np.asarray(names, dtype=object))
    counts.index.name, counts.columns.name = "query_id", None
    return counts.add_prefix(COLUMN)


def _names(table: pd.DataFrame) -> list[str]:
    return [c.removeprefix(COLUMN) for c in table.columns if c.startswith(COLUMN)]


def _totals(table: pd.DataFrame, weights: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """The format names and their pooled counts: shape (formats,), or (resamples, formats)."""
    names = _names(table)
    counts = table[[COLUMN + n for n in names]].to_numpy(dtype=float)
    return names, counts.sum(axis=0) if weights is None else weights @ counts


def _scalar(value: np.ndarray, weights: np.ndarray | None) -> float | np.ndarray:
    return float(value) if weights is None else value


def dominant_share(table: pd.DataFrame, weights: np.ndarray | None) -> float | np.ndarray | None:
    """`eval_dominant_format_share`: the largest format's share of the (resampled) samples."""
    names, totals = _totals(table, weights)
    if not names:
        return None
    return _scalar(totals.max(axis=-1) / totals.sum(axis=-1), weights)


def entropy(table: pd.DataFrame, weights: np.ndarray | None) -> float | np.ndarray | None:
    """`eval_format_entropy` (nats) of the (resampled) samples' format shares."""
    names, totals = _totals(table, weights)
    if not names:
        return None
    p = totals / totals.sum(axis=-1, keepdims=True)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return _scalar(-terms.sum(axis=-1) + 0.0, weights)


def share_of(name: str) -> TableFigure:
    """`eval_format_share/<name>`: 0 in a table where no sample has that format."""

    def share(table: pd.DataFrame, weights: np.ndarray | None) -> float | np.ndarray | None:
        names, totals = _totals(table, weights)
        if not names:
            return None
        mine = totals[..., names.index(name)] if name in names else np.zeros(totals.shape[:-1])
        return _scalar(mine / totals.sum(axis=-1), weights)

    return share


def format_figures(tables: Iterable[pd.DataFrame]) -> dict[str, TableFigure]:
    """The format figures the per-test-query `tables` (of both arms, every seed) support: none
    when they have no format columns (a task without formats), else the pooled figures and a
    share for every format seen in any of them."""
    names = sorted({n for t in tables for n in _names(t)})
    if not names:
        return {}
    return {"eval_dominant_format_share": dominant_share, "eval_format_entropy": entropy,
            **{SHARE + n: share_of(n) for n in names}}
