"""The benchmark's arithmetic, kept apart from its runs so each figure can be checked on
hand-made numbers: the spread of repetitions, and a stage's seconds split into a fixed part
and a per-item part by a least-squares line through (items, seconds)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Every repetition, in the order run, with min / median / max."""
    if not values:
        raise ValueError("spread of no repetitions")
    return {"reps": [float(v) for v in values], "min": float(min(values)),
            "median": float(statistics.median(values)), "max": float(max(values))}


def fixed_and_per_item(items: Sequence[float], seconds: Sequence[float]) -> dict[str, float]:
    """Least-squares seconds = fixed + per_item * items over every (size, repetition) point;
    needs at least two distinct sizes."""
    if len(set(items)) < 2:
        raise ValueError(f"a fixed/per-item split needs >= 2 sizes, got items {sorted(set(items))}")
    n = len(items)
    mx, my = sum(items) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in items)
    slope = sum((x - mx) * (y - my) for x, y in zip(items, seconds)) / sxx
    return {"fixed_seconds": my - slope * mx, "per_item_seconds": slope}


def max_relative_deviation(items: Sequence[float], seconds: Sequence[float]) -> float:
    """The worst |y - line(x)| / y: how far a point lies from the fitted line."""
    fit = fixed_and_per_item(items, seconds)
    return max(abs(y - (fit["fixed_seconds"] + fit["per_item_seconds"] * x)) / y
               for x, y in zip(items, seconds))


def ratio_of_slopes(raw: dict[str, float], loop: dict[str, float]) -> float:
    """raw per-item seconds / loop per-item seconds: 1 when an item costs the loop what it costs
    the raw computation, below 1 when the loop adds a cost per item."""
    return raw["per_item_seconds"] / loop["per_item_seconds"]
