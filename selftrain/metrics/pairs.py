"""Figures of a round's preference pairs (docs/metrics.md, "Preference pairs"): how many, which
levels they reach, how much of them comes from the critic's located errors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from selftrain.metrics.tail import coverage, per_pool_query, tail_ratio


def pair_metrics(pool: pd.DataFrame, samples: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    """`pairs`, `pair_coverage@L`, `pair_tail_ratio`, `step_pair_share` (docs/metrics.md) from
    the pool (query_id, difficulty), samples.parquet and pairs.parquet."""
    table = per_pool_query(pool, samples, pairs)
    out: dict[str, float] = {"pairs": len(pairs)}
    for lv in sorted(set(table["level"].tolist())):
        out[f"pair_coverage@{lv}"] = coverage(table, lv)
    out["pair_tail_ratio"] = float(tail_ratio(table))
    out["step_pair_share"] = float(np.mean(pairs["origin"] == "step")) if len(pairs) else 0.0
    return out
