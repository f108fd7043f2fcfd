"""Paired bootstrap of the difference between two arms on one figure at one round.

For arm A against reference arm B on figure F, the estimate is the mean over seeds of
F(A) - F(B). Its 95% interval comes from resampling twice, as the data were drawn: the seeds
with replacement, then, within each drawn seed, the queries the figure averages over (the test
split for test figures, the round's pool for pool figures), with replacement within each
difficulty level so every resample keeps the split's mix of levels. Both arms get the same
query resample, since they share their queries: the interval is for the difference, not for
each arm. Each resample recomputes F from one row per query with the metric functions'
own code (selftrain/metrics/per_query.py). docs/metrics.md states the conventions.

A null verdict says little without what the comparison could have detected: `mde` is the
smallest true difference detected with 80% probability, (z_{1-alpha/2} + z_{0.8}) times the
SD of the bootstrap distribution, and `seeds_needed` the seeds a difference of the observed
size would need, from the spread of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from selftrain.metrics.diversity import distinct_paths
from selftrain.metrics.outcome import solve_rate
from selftrain.metrics.tail import coverage, tail_ratio

Figure = Callable[[pd.DataFrame, np.ndarray | None], float | np.ndarray | None]
"""F(table, weights): the figure of a per-query table (weights None), or of each resample."""


def _hardest(table: pd.DataFrame) -> int:
    return table["level"].max()


FIGURES: dict[str, Figure] = {
    "pass@1": lambda t, w: solve_rate(t, None, w),
    "acc@H": lambda t, w: solve_rate(t, _hardest(t), w),
    "coverage@H": lambda t, w: coverage(t, _hardest(t), w),
    "tail_ratio": tail_ratio,
    "distinct_paths": lambda t, w: distinct_paths(t["paths"].to_numpy(), w),
}
"""The figures of selftrain.metrics.keys.BOOTSTRAP_FIGURES, as functions of a per-query table:
test figures of `per_test_query` rows, pool figures of `per_pool_query` rows with a `paths`
column (`paths_per_query`, NaN for queries with fewer than 2 accepted completions)."""


@dataclass(frozen=True)
class SeedPair:
    """One seed's per-query tables of both arms, rows aligned on the same queries."""

    arm: pd.DataFrame
    reference: pd.DataFrame

    def __post_init__(self) -> None:
        if not self.arm.index.equals(self.reference.index):
            raise ValueError("the two arms' per-query tables list different queries; a paired "
                             "comparison needs the same queries (same task seed) in both arms")
        if not (self.arm["level"].to_numpy() == self.reference["level"].to_numpy()).all():
            raise ValueError("the two arms give the same query different levels")


@dataclass(frozen=True)
class Difference:
    """F(arm) - F(reference) averaged over seeds, with its bootstrap interval and verdict."""

    diff: float | None
    lo: float | None
    hi: float | None
    verdict: str
    seeds: int
    undefined_resamples: int
    """Resamples where F was undefined (e.g. no query with 2 accepted rows), left out."""
    mde: float | None = None
    """Minimum detectable difference at 80% power (`detectable`)."""
    seeds_needed: int | None = None
    """Seeds to detect `diff` at 80% power (`seeds_needed`); None with fewer than 2 seeds or
    diff = 0."""


POWER = 0.8


def detectable(bootstrap_diffs: np.ndarray, confidence: float) -> float:
    """`mde`: (z_{1-alpha/2} + z_{power}) x SD of the bootstrap differences (numpy's std, the
    SD of the resamples themselves): 2.8 SD at 95%."""
    return _z_sum(confidence) * float(np.std(bootstrap_diffs))


def seeds_needed(seed_diffs: Sequence[float], confidence: float) -> int | None:
    """`seeds_needed`: ceil(((z_{1-alpha/2} + z_{power}) x s_d / |d|)^2), d the mean and s_d
    the sample SD (n - 1) of the per-seed differences; None with fewer than 2 seeds or d = 0."""
    d = float(np.mean(seed_diffs)) if len(seed_diffs) else 0.0
    if len(seed_diffs) < 2 or d == 0:
        return None
    s_d = float(np.std(seed_diffs, ddof=1))
    return math.ceil((_z_sum(confidence) * s_d / abs(d)) ** 2)


def _z_sum(confidence: float) -> float:
    normal = NormalDist()
    return normal.inv_cdf(1 - (1 - confidence) / 2) + normal.inv_cdf(POWER)


def verdict(lo: float | None, hi: float | None) -> str:
    """"higher" / "lower" when the interval excludes 0, else "no difference detected"."""
    if lo is None or hi is None:
        return "undefined"
    if lo > 0:
        return "higher"
    if hi < 0:
        return "lower"
    return "no difference detected"


def query_weights(levels: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, queries) draw counts: per level, as many draws with replacement among that
    level's queries as it has queries."""
    n = len(levels)
    counts = np.zeros(resamples * n)
    offsets = np.arange(resamples)[:, None] * n  # row b's queries live at b * n + query
    for level in np.unique(levels):
        members = np.flatnonzero(levels == level)
        picks = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        counts += np.bincount((offsets + picks).ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n)


def paired_bootstrap(pairs: Sequence[SeedPair], figure: Figure, *, resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> Difference:
    """The difference of `figure` between the arms of `pairs` (one per seed), with a percentile
    interval (numpy's linear interpolation) from `resamples` two-level resamples.

    Seeds where the figure is undefined for either arm are left out of the estimate and of the
    resampling. The same `seed` gives the same interval.
    """
    point = []
    kept = []
    for pair in pairs:
        a, b = figure(pair.arm, None), figure(pair.reference, None)
        if a is not None and b is not None:
            point.append(a - b)
            kept.append(pair)
    if not kept:
        return Difference(None, None, None, "undefined", 0, 0)
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for _ in kept:  # each draw of a seed gets its own query resample
        drawn = rng.integers(0, len(kept), size=resamples)
        for s, pair in enumerate(kept):
            rows = np.flatnonzero(drawn == s)
            if len(rows):
                w = query_weights(pair.arm["level"].to_numpy(), len(rows), rng)
                total[rows] += figure(pair.arm, w) - figure(pair.reference, w)
    diffs = total / len(kept)
    finite = diffs[np.isfinite(diffs)]
    tail = (1 - confidence) / 2 * 100
    lo, hi = (None, None)
    if len(finite):
        lo, hi = (float(x) for x in np.percentile(finite, [tail, 100 - tail]))
    return Difference(float(np.mean(point)), lo, hi, verdict(lo, hi), len(kept),
                      int(resamples - len(finite)),
                      mde=detectable(finite, confidence) if len(finite) else None,
                      seeds_needed=seeds_needed(point, confidence))
