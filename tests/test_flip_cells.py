"""The flip cells at equal pass rates (selftrain/report/flip_cells.py), on hand-made eval rows
and run figures with known answers."""

from __future__ import annotations

import pandas as pd
import pytest

from selftrain.judges import build_judge
from selftrain.metrics.policy import policy_diversity
from selftrain.report.flip_cells import (
    CellRun,
    at_pass_rate,
    cell_label,
    cell_table,
    common_rate,
)
from selftrain.tasks import make_task

TASK = make_task("lexicon_lines", levels=[2], train_per_level=4, test_per_level=4, breadth=8)


def evals() -> pd.DataFrame:
    """Query A: 4 distinct passing lines; query B: 2 passing (the same line), 2 failing; C:
    none passing. 6 of 12 pass."""
    rows = [("A", j, text, True) for j, text in enumerate(["ba de", "bo de", "ba du", "bi di"])]
    rows += [("B", 0, "ka lo", True), ("B", 1, "ka lo", True), ("B", 2, "x", False),
             ("B", 3, "y", False)]
    rows += [("C", j, "z" * (j + 1), False) for j in range(4)]
    return pd.DataFrame(rows, columns=["query_id", "sample_idx", "completion", "correct"])


def test_at_pass_rate_keeps_that_share_of_the_passing_rows_at_random():
    table = evals()
    half = at_pass_rate(table, 0.25, seed=3)  # 3 of 12 rows pass
    assert int(half["correct"].sum()) == 3
    assert not (half["correct"] & ~table["correct"]).any()  # only rows that passed
    assert half.drop(columns="correct").equals(table.drop(columns="correct"))
    assert at_pass_rate(table, 0.25, seed=3)["correct"].tolist() == half["correct"].tolist()
    draws = {tuple(at_pass_rate(table, 0.25, seed=s)["correct"]) for s in range(20)}
    assert len(draws) > 1  # the kept rows are drawn, not the first ones
    assert at_pass_rate(table, 0.5)["correct"].tolist() == table["correct"].tolist()
    with pytest.raises(ValueError, match="only 6 of 12 pass"):
        at_pass_rate(table, 0.6)


def test_the_matched_passing_figures_are_a_recomputation_over_the_kept_rows():
    judge = build_judge("solution-key", None, {}, TASK)
    table = at_pass_rate(evals(), 0.25, seed=1)
    got = policy_diversity(table, judge=judge, enabled={"eval_classes_passing", "effective_div"},
                           token_ids=lambda texts: [[ord(c) for c in t] for t in texts])
    kept = table[table["correct"]].groupby("query_id")["completion"].nunique()
    classes = [kept.get(q, 0) for q in ("A", "B", "C")]  # by hand: distinct kept lines per query
    assert got["eval_classes_passing"] == pytest.approx(sum(classes) / 3)
    assert got["effective_div"] == pytest.approx(sum(c / 4 for c in classes) / 3)


def run(arm: str, seed: int, first: dict, last: dict, cell: str = "c") -> CellRun:
    return CellRun(arm, seed, cell, {0: first, 3: last})


def test_common_rate_and_the_table_of_changes():
    runs = [run("broad", 0, {"pass@1": 0.2, "eval_classes_passing@p": 1.0},
                {"pass@1": 0.4, "eval_classes_passing@p": 2.0}, "breadth 8"),
            run("broad", 1, {"pass@1": 0.3, "eval_classes_passing@p": 1.0},
                {"pass@1": 0.5, "eval_classes_passing@p": 3.0}, "breadth 8"),
            run("narrow", 0, {"pass@1": 0.9}, {"pass@1": 0.15}, "breadth 1")]
    assert common_rate(runs, [0, 3]) == 0.15
    lines = cell_table(runs, 0, 3, 0.15)
    assert lines[0].startswith("Common pass rate p = 0.150; each cell: round 0 -> round 3")
    cols = [c.strip().strip("`") for c in lines[2].strip("|").split("|")]
    broad = [c.strip() for c in lines[4].strip("|").split("|")]
    narrow = [c.strip() for c in lines[5].strip("|").split("|")]
    assert broad[:3] == ["broad", "breadth 8", "2"]
    assert broad[cols.index("pass@1")] == "0.250 -> 0.450, +0.200 (sd 0.000)"
    assert broad[cols.index("eval_classes_passing@p")] == "1.000 -> 2.500, +1.500 (sd 0.707)"
    assert narrow[cols.index("pass@1")] == "0.900 -> 0.150, -0.750"
    assert narrow[cols.index("effective_div@p")] == narrow[cols.index("eval_distinct_n_passing@p")] == "–"


def test_cell_label_names_breadth_term_threshold_and_objective():
    assert cell_label({"breadth": 8, "distinct_weight": 0.5, "pass_threshold": 0.75}, "sft",
                      "all") == "breadth 8, term 0.5, threshold 0.75, sft"
    assert cell_label({"breadth": 1, "distinct_weight": 0.0}, "dpo",
                      "diverse") == "breadth 1, no term, threshold 1, dpo diverse"
