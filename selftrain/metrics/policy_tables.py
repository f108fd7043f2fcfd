"""The policy's diversity figures as functions of a per-test-query table, so arm comparisons
state them like `pass@1`: with a paired-bootstrap interval, `mde` and `seeds_needed`.

Each figure of selftrain/metrics/policy.py is a mean over test queries of a per-query value; a
query without one (fewer than 2 samples, or fewer than 2 passing ones) is left out, as
metrics.json leaves it out. `policy_columns` computes the per-query values with the function the
round's metrics use, one query at a time, so the plain mean is metrics.json's figure; a
resample weighs each query by how often it was drawn.

A comparison recomputes only what the run folder and a free judge give: the n-gram figures
(the policy's tokenizer) and, with the solution-key judge, the class figures. `eval_embed_div`
and classes from a model or a served judge stay in metrics.json and the report; recomputing
them would load a model or call a server for every comparison.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from selftrain.metrics.diversity import TokenIds
from selftrain.metrics.format_tables import TableFigure
from selftrain.metrics.outcome import unknown_score_share
from selftrain.metrics.policy import CLASS_FIGURES, policy_diversity
from selftrain.types import Judge

COLUMN = "policy/"
"""Prefix of the per-query columns: `policy/<figure>` = that test query's value."""

ORDER = ("eval_distinct_n", "eval_distinct_n_passing", "eval_classes", "eval_classes_passing",
         "effective_div", "passing_pair_div", "eval_unknown_score_share")
"""The figures a comparison states, in the order its tables list them. The last is not a
diversity figure but is read the same way: a graded task's share of test samples whose score
is unknown (an unreadable judge), a mean over queries of equal sample counts."""


def policy_columns(evals: pd.DataFrame, token_ids: TokenIds, judge: Judge | None,
                   keys: Iterable[str] = ORDER[:-1]) -> pd.DataFrame:
    """query_id -> `policy/<figure>` of its test samples (NaN where undefined), for the figures
    of `keys`; the class figures only with a `judge`; `eval_unknown_score_share` needs neither."""
    keys = set(keys) & set(ORDER)
    enabled = {"eval_distinct_n"} & {k.removesuffix("_passing") for k in keys}
    if judge is not None:
        enabled |= CLASS_FIGURES & keys
    rows = {}
    for query_id, group in evals.groupby("query_id", sort=True):
        values = policy_diversity(group, judge=judge, token_ids=token_ids, enabled=enabled)
        if "eval_unknown_score_share" in keys:
            values["eval_unknown_score_share"] = unknown_score_share(group)
        rows[query_id] = {COLUMN + k: np.nan if values.get(k) is None else float(values[k])
                          for k in ORDER if k in keys and k in values}
    table = pd.DataFrame.from_dict(rows, orient="index", dtype=float)
    table.index.name = "query_id"
    return table


def mean_of(key: str) -> TableFigure:
    """The figure `key`: the mean of its per-query values over the queries that have one."""
    column = COLUMN + key

    def figure(table: pd.DataFrame, weights: np.ndarray | None) -> float | np.ndarray | None:
        if column not in table:
            return None
        values = table[column].to_numpy(dtype=float)
        has = ~np.isnan(values)
        if weights is None:
            return float(values[has].mean()) if has.any() else None
        with np.errstate(invalid="ignore", divide="ignore"):
            return (weights @ np.where(has, values, 0.0)) / (weights @ has.astype(float))

    return figure


def policy_figures(tables: Iterable[pd.DataFrame]) -> dict[str, TableFigure]:
    """The policy figures the per-test-query `tables` (both arms, every seed) hold columns for."""
    present = {c.removeprefix(COLUMN) for t in tables for c in t.columns if c.startswith(COLUMN)}
    return {key: mean_of(key) for key in ORDER if key in present}
