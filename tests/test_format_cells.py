"""The test split's format figures as comparison cells: the per-query figure functions against
the round's own figures (selftrain/metrics/formats.py) on hand-made tables, with and without
resampling weights, and over hand-made run folders (comparison.json cells with intervals, mde,
seeds_needed; report.md's format table; an altered metrics.json refused)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from selftrain.metrics import outcome_metrics, tail_metrics
from selftrain.metrics.format_tables import (
    dominant_share,
    entropy,
    format_columns,
    format_figures,
    share_of,
)
from selftrain.metrics.formats import format_metrics
from selftrain.report.comparison import compare_runs, comparison_markdown

STEPS, EXPR, JUNK = "2+3=5\n5*4=20", "(2+3)*4=20", "no idea"


def _format(text: str) -> str | None:
    return {STEPS: "steps", EXPR: "expression"}.get(text)


def _evals(per_query: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(q, i, c) for q, texts in per_query.items() for i, c in enumerate(texts)]
    return pd.DataFrame(rows, columns=["query_id", "sample_idx", "completion"])


# Three queries, four samples each: 6 steps, 4 expression, 2 of no format.
EVALS = _evals({"a": [STEPS, STEPS, STEPS, EXPR], "b": [EXPR, EXPR, JUNK, STEPS],
                "c": [STEPS, STEPS, EXPR, JUNK]})


def test_per_query_counts_and_figures_by_hand():
    table = format_columns(EVALS, _format)
    assert table.loc["a"].to_dict() == {"format/expression": 1, "format/none": 0,
                                        "format/steps": 3}
    assert dominant_share(table, None) == 6 / 12
    assert share_of("expression")(table, None) == 4 / 12
    assert share_of("unseen")(table, None) == 0.0
    assert entropy(table, None) == pytest.approx(-sum(p * math.log(p) for p in (.5, 1 / 3, 1 / 6)))
    # Weights: query a twice, b none, c once -> steps 8, expression 3, none 1 of 12.
    w = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert dominant_share(table, w).tolist() == pytest.approx([8 / 12, 6 / 12])
    assert share_of("none")(table, w).tolist() == pytest.approx([1 / 12, 2 / 12])
    # No format columns (a task without formats): undefined, and no format cells at all.
    assert dominant_share(table.drop(columns=list(table.columns)), None) is None
    assert format_figures([table.drop(columns=list(table.columns))]) == {}


def test_figures_equal_the_rounds_own_on_resampled_samples():
    """F(table, w) equals format_metrics over the eval rows repeated as w draws them, and
    F(table, None) equals metrics.json's value to the last bit where the formula is the same."""
    table = format_columns(EVALS, _format)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 4, size=(20, 3)).astype(float)
    w[w.sum(axis=1) == 0, 0] = 1.0
    figures = format_figures([table])
    assert list(figures)[:2] == ["eval_dominant_format_share", "eval_format_entropy"]
    for b in range(len(w)):
        drawn = [c for q, n in zip("abc", w[b]) for _ in range(int(n))
                 for c in EVALS.loc[EVALS["query_id"] == q, "completion"]]
        want = format_metrics([], drawn, _format)
        for key, fn in figures.items():
            assert fn(table, w)[b] == pytest.approx(want.get(key, 0.0), abs=1e-12), key
    want = format_metrics([], EVALS["completion"].tolist(), _format)
    assert dominant_share(table, None) == want["eval_dominant_format_share"]
    assert entropy(table, None) == pytest.approx(want["eval_format_entropy"], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Over run folders
# ---------------------------------------------------------------------------------------------


def _round(rng: np.random.Generator, expr_share: float) -> dict[str, pd.DataFrame]:
    """A round of a countdown task: 4 pool queries per level 3, 4 (K = 2), 6 test queries per
    level (n = 8) whose samples are expressions with probability `expr_share`, else steps."""
    pool = pd.DataFrame({"query_id": [f"q{i}" for i in range(8)], "difficulty": [3] * 4 + [4] * 4})
    samples = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(16)], "query_id": np.repeat(pool["query_id"], 2),
        "difficulty": np.repeat(pool["difficulty"], 2), "prompt": "p", "completion": STEPS,
        "answer": "20", "correct": rng.random(16) < 0.5, "origin": "sample", "num_tokens": 10})
    train = samples[samples["correct"]][["sample_id", "query_id", "difficulty", "prompt",
                                         "completion", "origin"]]
    texts = np.where(rng.random(96) < expr_share, EXPR, STEPS)
    texts[::11] = JUNK
    evals = pd.DataFrame({
        "query_id": np.repeat([f"t{i}" for i in range(12)], 8),
        "difficulty": np.repeat([3] * 6 + [4] * 6, 8), "sample_idx": list(range(8)) * 12,
        "completion": texts, "answer": "20", "correct": rng.random(96) < 0.5})
    return {"pool": pool, "samples": samples, "train": train, "eval": evals}


def make_experiment(root, shares: dict[str, float]) -> None:
    """Arms over seeds 0-2, rounds 0-1; each arm's test samples are expressions at its share."""
    from selftrain.tasks import make_task

    task = make_task("countdown", seed=0, levels=[3, 4])
    for a, (arm, share) in enumerate(shares.items()):
        for seed in (0, 1, 2):
            run = root / arm / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(
                "task:\n  name: countdown\n  args: {seed: 0, levels: [3, 4]}\n")
            for k in (0, 1):
                d = run / f"round_{k}"
                d.mkdir()
                frames = _round(np.random.default_rng(100 * seed + 10 * k + a), share)
                for name in ("samples", "train", "eval"):
                    frames[name].to_parquet(d / f"{name}.parquet")
                metrics = tail_metrics(frames["pool"], frames["samples"], frames["train"], 2)
                metrics.update(outcome_metrics(frames["eval"], [1]))
                metrics.update(format_metrics(frames["train"]["completion"].tolist(),
                                              frames["eval"]["completion"].tolist(),
                                              task.format_of))
                (d / "metrics.json").write_text(json.dumps(metrics))


def test_format_cells_over_run_folders(tmp_path):
    make_experiment(tmp_path, {"rs": 0.5, "critique": 0.05})
    result = compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=400)
    json.dumps(result)
    cells = {(c["round"], c["figure"]): c for c in result["cells"]}
    formats = ["eval_dominant_format_share", "eval_format_entropy",
               "eval_format_share/expression", "eval_format_share/none", "eval_format_share/steps"]
    assert sorted(f for k, f in cells if k == 0 and f.startswith("eval_")) == sorted(formats)
    for k in (0, 1):
        written = [json.loads((tmp_path / "critique" / f"seed{s}" / f"round_{k}" /
                               "metrics.json").read_text()) for s in (0, 1, 2)]
        for figure in formats:
            cell = cells[k, figure]
            assert cell["key"] == figure and cell["queries"] == "test"
            mean = sum(m[figure] for m in written) / 3
            assert cell["arm_mean"] == pytest.approx(mean, abs=1e-12)
            assert cell["lo"] <= cell["diff"] <= cell["hi"]
            if figure == "eval_format_share/none":  # the same samples of no format in both arms
                assert (cell["diff"], cell["mde"], cell["seeds_needed"]) == (0.0, 0.0, None)
            else:
                assert cell["mde"] > 0 and cell["seeds_needed"] >= 1
        # critique writes nearly all steps, rs half expressions: one format dominates more,
        # the entropy is lower, the expression share lower; every one detected.
        assert cells[k, "eval_dominant_format_share"]["verdict"] == "higher"
        assert cells[k, "eval_format_entropy"]["verdict"] == "lower"
        assert cells[k, "eval_format_share/expression"]["verdict"] == "lower"

    lines = comparison_markdown(result)
    at = lines.index("`critique` − `rs`, formats of the test samples:")
    assert lines[at + 2].startswith(
        "| round | seeds | `gen_tokens` (critique / rs) | `eval_dominant_format_share` |")
    assert "`eval_format_entropy`" not in "\n".join(lines[:at])  # not in the first table
    assert "lower" in lines[at + 5]


def test_an_altered_format_figure_is_refused(tmp_path):
    make_experiment(tmp_path, {"rs": 0.5, "critique": 0.5})
    path = tmp_path / "rs" / "seed2" / "round_1" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["eval_dominant_format_share"] -= 0.01
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"seed2/round_1: eval_dominant_format_share recomputed"):
        compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=50)
