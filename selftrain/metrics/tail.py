"""Tail-narrowing figures of one round's training data (docs/metrics.md, "Tail narrowing").

They compare the round's query pool Q with the accepted set A: which queries and difficulty
levels the training data still covers, and how unevenly rows spread over queries. Levels are the
sorted distinct difficulties of the pool; keys carry the level as an int (`coverage@3`).

An empty A is a normal outcome of a bad round, not an error: `train_share@L`, `tail_ratio`,
`refined_share` and `train_per_query_gini` are then 0 (all-zero counts are perfectly equal).
An empty pool is an error: there is nothing to measure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from selftrain.metrics.per_query import weighted_mean, weighted_sum


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: mean |x_i - x_j| over all pairs / (2 * mean).

    0 when all counts are equal (all zero included), (n-1)/n when one holds everything.
    Uses the sorted form sum_i (2i - n - 1) x_(i) / (n * sum x), i = 1..n, which is O(n log n).
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def _levels_of(pool: pd.DataFrame) -> dict[object, int]:
    """query_id -> int level; checks the pool has unique ids and integer difficulties."""
    dup = pool["query_id"][pool["query_id"].duplicated()]
    if len(dup):
        raise ValueError(f"query pool lists query_id {dup.iloc[0]!r} more than once")
    levels = pool["difficulty"].to_numpy()
    if not np.all(np.equal(np.mod(levels, 1), 0)):
        raise ValueError(f"difficulty must be integer levels, got {sorted(set(levels))}")
    return dict(zip(pool["query_id"], levels.astype(int), strict=True))


def per_pool_query(pool: pd.DataFrame, samples: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """One row per pool query, in pool order: its `level`, `solved` (correct first-pass samples)
    and `rows` (rows of the training set). Checks the pool and that A comes from it."""
    if pool.empty:
        raise ValueError("query pool is empty: a round needs at least one query")
    level_of = _levels_of(pool)
    stray = set(train["query_id"]) - level_of.keys()
    if stray:
        raise ValueError(
            f"train.parquet has {len(stray)} query_id(s) not in the round's pool, "
            f"e.g. {sorted(stray, key=str)[:3]}: the training set must come from the pool"
        )
    ids = pool["query_id"]
    first_pass = samples[samples["origin"] == "sample"]
    solved = first_pass.groupby("query_id")["correct"].sum().reindex(ids, fill_value=0)
    rows = train.groupby("query_id").size().reindex(ids, fill_value=0)
    return pd.DataFrame(
        {"level": ids.map(level_of).to_numpy(), "solved": solved.to_numpy(),
         "rows": rows.to_numpy()},
        index=pd.Index(ids, name="query_id"),
    )


def coverage(
    table: pd.DataFrame, level: int | None = None, weights: np.ndarray | None = None
) -> float | np.ndarray | None:
    """`coverage` (level None) or `coverage@level`: share of pool queries with a training row
    (`per_pool_query` rows; weights: see selftrain.metrics.per_query)."""
    where = None if level is None else (table["level"] == level).to_numpy()
    return weighted_mean(table["rows"].to_numpy() > 0, where, weights)


def tail_ratio(table: pd.DataFrame, weights: np.ndarray | None = None) -> float | np.ndarray:
    """`train_share@H / pool_share@H`, H the hardest level of the pool (`per_pool_query` rows).

    train_share@H is 0 when the training set is empty (a bad round, not an error).
    """
    hard = (table["level"] == table["level"].max()).to_numpy()
    rows = table["rows"].to_numpy()
    total, hard_rows = weighted_sum(rows, weights), weighted_sum(rows * hard, weights)
    if weights is None:
        return (hard_rows / total if total else 0.0) / weighted_mean(hard)
    with np.errstate(invalid="ignore", divide="ignore"):
        train_share = np.where(total > 0, hard_rows / total, 0.0)
    return train_share / weighted_mean(hard, None, weights)


def tail_metrics(
    pool: pd.DataFrame, samples: pd.DataFrame, train: pd.DataFrame, num_samples: int
) -> dict[str, float]:
    """Tail figures of one round.

    pool: the round's query pool Q (query_id, difficulty). samples: rows of samples.parquet; only
    origin == "sample" rows are first-pass. train: rows of train.parquet (query_id, origin).
    num_samples: K, the configured first-pass samples per query, so a query whose samples went
    missing still counts as solved at rate (correct found) / K.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples (K) must be >= 1, got {num_samples}")
    table = per_pool_query(pool, samples, train)
    level, rows = table["level"].to_numpy(), table["rows"].to_numpy()
    levels = sorted(set(level.tolist()))
    n_train = len(train)

    out: dict[str, float] = {
        "solve_rate_mean": float((table["solved"].to_numpy() / num_samples).mean()),
        "coverage": coverage(table),
    }
    pool_share: dict[int, float] = {}
    train_count: dict[int, int] = {}
    for lv in levels:
        in_level = level == lv
        pool_share[lv] = float(in_level.mean())
        train_count[lv] = int(rows[in_level].sum())
        out[f"coverage@{lv}"] = coverage(table, lv)
        out[f"pool_share@{lv}"] = pool_share[lv]
        out[f"train_share@{lv}"] = train_count[lv] / n_train if n_train else 0.0

    out["tail_ratio"] = tail_ratio(table)
    # Smoothing keeps the KL finite when a level has no accepted row (the tail we look for).
    denom = n_train + 0.5 * len(levels)
    out["narrowing_kl"] = float(
        sum(p * np.log(p / ((train_count[lv] + 0.5) / denom)) for lv, p in pool_share.items())
    )
    out["train_size"] = n_train
    out["train_per_query_gini"] = gini(rows)
    out["refined_share"] = float((train["origin"] == "refine").mean()) if n_train else 0.0
    return out
