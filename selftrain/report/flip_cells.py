"""The flip experiment's cells side by side at equal pass rates: does breadth alone decide how
the policy's passing diversity moves, or the distinctiveness term?

A figure over passing samples depends on how many pass: a cell whose threshold passes more
samples has more passing lines per query to be distinct. So each cell's passing figures are
also recomputed *as if every cell passed the same share* of its test samples, the common rate
p (by default the lowest `pass@1` of any cell in the rounds compared): in each (run, round),
round(p x rows) of its passing samples keep their mark, drawn uniformly at random (seeded), and
the rest are set to failing. Drawing at random rather than keeping the best-scored samples
matters: with the distinctiveness term the best-scored lines are the rarest, so raising that
cell's threshold would raise its diversity by construction.

Read a row of the table as: the cell's pass rate, its diversity over all samples, its passing
diversity at its own threshold, and its passing diversity at the common rate, each as round
`first` -> round `last` (mean over seeds) with the change's seed SD. Breadth alone decides when
the two broad cells (term off and on) move alike at the common rate; the term decides when the
broad cells differ and narrow_distinct moves like broad_distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean, stdev

import numpy as np
import pandas as pd

OWN = ["pass@1", "eval_distinct_n", "eval_distinct_n_passing", "eval_classes_passing",
       "effective_div"]
"""The figures read from each round's metrics.json (at the cell's own threshold)."""
MATCHED = ["eval_distinct_n_passing", "eval_classes_passing", "effective_div"]
"""The passing figures recomputed at the common pass rate (column names end in `@p`)."""


@dataclass
class CellRun:
    """One run of a cell: its figures per round (the OWN keys and the MATCHED ones + "@p")."""

    arm: str
    seed: int
    cell: str
    """The landscape and objective, e.g. "breadth 8, term 0.5, threshold 0.75, dpo diverse"."""
    figures: dict[int, dict[str, float | None]] = field(default_factory=dict)


def cell_label(task_args: dict, objective: str, selection: str) -> str:
    """A cell's name from its config: breadth, distinctiveness weight, threshold, objective."""
    term = task_args.get("distinct_weight", 0.0)
    parts = [f"breadth {task_args.get('breadth')}", f"term {term:g}" if term else "no term",
             f"threshold {task_args.get('pass_threshold', 1.0):g}", objective]
    return ", ".join(parts) + (" diverse" if selection == "diverse" else "")


def common_rate(runs: Sequence[CellRun], rounds: Sequence[int]) -> float:
    """The lowest pass@1 of any run in `rounds`: every cell has at least that share passing."""
    rates = [r.figures[k]["pass@1"] for r in runs for k in rounds
             if r.figures.get(k, {}).get("pass@1") is not None]
    if not rates:
        raise ValueError("no run has pass@1 in the rounds compared")
    return float(min(rates))


def at_pass_rate(evals: pd.DataFrame, rate: float, seed: int = 0) -> pd.DataFrame:
    """Rows of eval.parquet with `correct` kept on round(rate x rows) of the passing rows,
    drawn uniformly at random (numpy, `seed`), and False on every other row. A rate above the
    share that passes is a ValueError: there are not that many passing samples to keep."""
    passing = np.flatnonzero(evals["correct"].to_numpy(dtype=bool))
    keep = int(round(rate * len(evals)))
    if keep > len(passing):
        raise ValueError(f"pass rate {rate:.3f} asks for {keep} passing samples, only "
                         f"{len(passing)} of {len(evals)} pass")
    chosen = np.random.default_rng(seed).choice(passing, size=keep, replace=False)
    out = evals.copy()
    mask = np.zeros(len(evals), dtype=bool)
    mask[chosen] = True
    out["correct"] = mask
    return out


def _change(runs: Sequence[CellRun], key: str, first: int, last: int) -> str:
    pairs = [(r.figures[first].get(key), r.figures[last].get(key)) for r in runs
             if first in r.figures and last in r.figures]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return "–"
    a, b = mean(p[0] for p in pairs), mean(p[1] for p in pairs)
    sd = f" (sd {stdev(q - p for p, q in pairs):.3f})" if len(pairs) > 1 else ""
    return f"{a:.3f} -> {b:.3f}, {b - a:+.3f}{sd}"


def cell_table(runs: Sequence[CellRun], first: int, last: int, rate: float) -> list[str]:
    """Markdown: one row per arm (its cell, seeds, and every figure as first -> last)."""
    keys = OWN + [f"{k}@p" for k in MATCHED]
    lines = [f"Common pass rate p = {rate:.3f}; each cell: round {first} -> round {last}, mean "
             f"over seeds, change (seed sd).", "",
             "| arm | cell | seeds | " + " | ".join(f"`{k}`" for k in keys) + " |",
             "|:---|:---|---:|" + "---:|" * len(keys)]
    by_arm: dict[str, list[CellRun]] = {}
    for r in runs:
        by_arm.setdefault(r.arm, []).append(r)
    for arm, group in by_arm.items():
        cells = " | ".join(_change(group, k, first, last) for k in keys)
        lines.append(f"| {arm} | {group[0].cell} | {len(group)} | {cells} |")
    return lines
