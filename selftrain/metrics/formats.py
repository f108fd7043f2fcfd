"""Solution formats (docs/metrics.md, "Formats"): each format's share of the training set and of
the test samples, their entropy and the largest share.

Format collapse (Zhao et al. 2025, "Echo Chamber": self-training converges on one of the
formats its base model learned) shows as the dominant share rising to about 1. The task names a
completion's format (`SolutionFormats.format_of`); a completion of no format counts as "none".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

NONE = "none"


def format_counts(completions: Sequence[str], format_of: Callable[[str], str | None]) -> Counter:
    """Format name -> number of completions of that format ("none": no format)."""
    return Counter(format_of(c) or NONE for c in completions)


def share_figures(counts: Counter, names: Sequence[str], prefix: str) -> dict[str, float | None]:
    """`<prefix>format_share/<name>` for every name (0 when absent), `<prefix>format_entropy`
    (nats) and `<prefix>dominant_format_share`; all None when there is no completion."""
    total = sum(counts.values())
    shares = {name: counts[name] / total if total else None for name in names}
    out: dict[str, float | None] = {f"{prefix}format_share/{n}": v for n, v in shares.items()}
    if not total:
        return {**out, f"{prefix}format_entropy": None, f"{prefix}dominant_format_share": None}
    present = [c / total for c in counts.values() if c]
    out[f"{prefix}format_entropy"] = -sum(p * math.log(p) for p in present) + 0.0
    out[f"{prefix}dominant_format_share"] = max(present)
    return out


def format_metrics(train: Sequence[str], evals: Sequence[str],
                   format_of: Callable[[str], str | None]) -> dict[str, float | None]:
    """The format figures of one round: on the training set's completions (no prefix) and on
    all test samples (prefix `eval_`), each over the format names seen in either."""
    train_counts, eval_counts = format_counts(train, format_of), format_counts(evals, format_of)
    names = sorted(set(train_counts) | set(eval_counts))
    return {**share_figures(train_counts, names, ""), **share_figures(eval_counts, names, "eval_")}
