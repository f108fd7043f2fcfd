"""The benchmark's figures on hand-made numbers with known answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_stats import (
    fixed_and_per_item,
    max_relative_deviation,
    ratio_of_slopes,
    spread,
)

from selftrain.experiments.minutes import Minutes


def test_spread_keeps_every_repetition_in_order():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"reps": [3.0, 1.0, 2.0, 10.0], "min": 1.0,
                                             "median": 2.5, "max": 10.0}
    with pytest.raises(ValueError):
        spread([])


def test_a_line_splits_into_its_intercept_and_slope():
    # 0.4 s fixed + 0.01 s per item, three repetitions at two sizes with symmetric noise
    items = [100, 100, 100, 300, 300, 300]
    seconds = [1.4, 1.5, 1.3, 3.4, 3.5, 3.3]
    fit = fixed_and_per_item(items, seconds)
    assert fit["fixed_seconds"] == pytest.approx(0.4)
    assert fit["per_item_seconds"] == pytest.approx(0.01)
    assert max_relative_deviation(items, seconds) == pytest.approx(0.1 / 1.3)
    with pytest.raises(ValueError, match=">= 2 sizes"):
        fixed_and_per_item([5, 5], [1.0, 2.0])


def test_slope_ratio_is_raw_over_loop():
    loop = {"fixed_seconds": 1.0, "per_item_seconds": 0.02}
    raw = {"fixed_seconds": 0.0, "per_item_seconds": 0.018}
    assert ratio_of_slopes(raw, loop) == pytest.approx(0.9)


def test_minutes_adds_up_parts_and_totals():
    minutes = Minutes(started=0.0)
    minutes.parts = {"base model": 1.0}
    with minutes.part("arm rs"):
        pass
    with minutes.part("arm rs"):
        pass
    assert list(minutes.parts) == ["base model", "arm rs"] and minutes.parts["arm rs"] >= 0
    rows = minutes.table("t").columns[0]._cells
    assert rows == ["base model", "arm rs", "other", "total"]
