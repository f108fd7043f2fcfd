"""Which `metrics.json` keys each table shows, and which key is the hardest level's.

Keys with a level carry it after `@` (`coverage@3`, see docs/metrics.md). A table names such a
figure with `@H` (`acc@H`), resolved to the hardest level, the largest one present, by
`resolve_key`: every table and the comparison statistics read it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

RUN_PROGRESS_KEYS = ["pass@1", "coverage", "tail_ratio", "narrowing_kl", "train_size",
                     "refined_share", "gen_tokens"]
"""The table printed after each round of one run (one row per round so far); the run's acc@L
and its hardest coverage@L follow these columns."""

ARM_TABLE_KEYS = ["pass@1", "acc@H", "coverage@H", "tail_ratio", "narrowing_kl",
                  "distinct_paths", "refined_share", "gen_tokens", "critic_calls"]
"""Arms side by side at one round: `selftrain compare`'s terminal table and report.md's
per-round table."""

GRADED_TABLE_KEYS = ["score_mean", "unknown_score_share", "eval_unknown_score_share"]
"""Graded tasks' columns after ARM_TABLE_KEYS in report.md's per-round table, where a run has
them: the mean score, and the shares of samples the scorer could not grade."""

COUNT_KEYS = frozenset({"gen_tokens", "critic_calls"})
"""Figures that are counts: shown without decimals."""

PATHS_QUERIES = "distinct_paths_queries"
"""The number of queries `distinct_paths` is a mean over (those with 2 or more accepted
completions): tables print it beside the figure, `2.333 (12)`."""

BOOTSTRAP_FIGURES = {"pass@1": "test", "acc@H": "test", "coverage@H": "pool",
                     "tail_ratio": "pool", "distinct_paths": "pool"}
"""The figures an arm comparison states with a bootstrap interval, and which queries each is
an average over (so which queries a resample draws): the test split or the round's pool."""


def numeric_order(text: str) -> tuple[int, float, str]:
    """Sort key: numbers by value first ("2" < "10"), then other strings alphabetically."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def levels(keys: Iterable[str], prefix: str) -> list[str]:
    """The levels L of the `prefix@L` keys among `keys`, easiest first."""
    found = {key.split("@", 1)[1] for key in keys if key.startswith(prefix + "@")}
    return sorted(found, key=numeric_order)


def level_keys(keys: Iterable[str], prefix: str) -> list[str]:
    """The `prefix@L` keys among `keys`, easiest level first."""
    return [f"{prefix}@{level}" for level in levels(keys, prefix)]


def hardest_key(keys: Iterable[str], prefix: str) -> str | None:
    """`prefix@H` for the hardest level among `keys`; None when no key has that prefix."""
    found = levels(keys, prefix)
    return f"{prefix}@{found[-1]}" if found else None


def resolve_key(key: str, keys: Iterable[str]) -> str:
    """`key` with `@H` replaced by the hardest level among `keys` (unchanged when none has one)."""
    if not key.endswith("@H"):
        return key
    return hardest_key(keys, key[:-2]) or key


def over_queries(counts: Iterable[object]) -> str:
    """` (12)`: the number of queries a per-query mean is over, as tables print it beside the
    figure; ` (11–12)` when seeds differ; "" when no count is recorded (older run folders)."""
    found = sorted({int(c) for c in counts if isinstance(c, (int, float)) and c == c})
    if not found:
        return ""
    return f" ({found[0]})" if len(found) == 1 else f" ({found[0]}–{found[-1]})"
