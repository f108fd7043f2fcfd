"""The paired bootstrap of arm comparisons: intervals worked by hand, identical and shifted arms,
figures on resampled queries equal to the metric functions on resampled frames, and the whole
comparison over run folders of real parquet files (comparison.json's structure, report table)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from selftrain.metrics import diversity_metrics, outcome_metrics, tail_metrics
from selftrain.metrics.bootstrap import (
    FIGURES,
    SeedPair,
    paired_bootstrap,
    query_weights,
    verdict,
)
from selftrain.metrics.diversity import paths_per_query, solution_keys
from selftrain.metrics.outcome import per_test_query
from selftrain.metrics.tail import per_pool_query
from selftrain.report import write_report
from selftrain.report.comparison import compare_runs, comparison_markdown


def _test_table(solve: list[float], levels: list[int] | None = None) -> pd.DataFrame:
    """A per-test-query table with n = 4 samples per query and the given solve rates."""
    levels = levels or [1] * len(solve)
    c = np.rint(np.array(solve) * 4).astype(int)
    return pd.DataFrame({"level": levels, "c": c, "n": 4, "solve": c / 4, "maj": c > 2},
                        index=pd.Index([f"t{i}" for i in range(len(solve))], name="query_id"))


# ---------------------------------------------------------------------------------------------
# The interval
# ---------------------------------------------------------------------------------------------


def test_interval_worked_by_hand():
    # One seed, four test queries of one level; the arms differ on q4 only: per-query
    # differences (0, 0, 0, 1). A resample draws q4 k ~ Binomial(4, 1/4) times and its pass@1
    # difference is k / 4. P(k = 0) = 81/256 = 0.32 > 2.5%, so the lower end is 0. P(k >= 3) =
    # 13/256 = 5.1% > 2.5% and P(k = 4) = 1/256 = 0.4% < 2.5%, so the upper end is 3/4. The
    # 2.5% and 97.5% points lie inside runs of equal values, so interpolation leaves them exact.
    arm = _test_table([0.5, 0.5, 0.5, 1.0])
    ref = _test_table([0.5, 0.5, 0.5, 0.0])
    d = paired_bootstrap([SeedPair(arm, ref)], FIGURES["pass@1"], resamples=4000, seed=7)
    assert d.diff == pytest.approx(0.25)  # (0 + 0 + 0 + 1) / 4
    assert (d.lo, d.hi) == (0.0, 0.75)
    assert d.verdict == "no difference detected" and d.seeds == 1
    # The same bootstrap seed gives the same interval; the estimate never depends on it.
    again = paired_bootstrap([SeedPair(arm, ref)], FIGURES["pass@1"], resamples=4000, seed=7)
    assert again == d


def test_interval_over_seeds_worked_by_hand():
    # Two seeds with one test query each: seed 0 differs by 0, seed 1 by 1. Query resampling
    # changes nothing (one query), so a resample is two seed draws: both seed 0 (1/4) -> 0,
    # one of each (1/2) -> 1/2, both seed 1 (1/4) -> 1. Interval [0, 1], estimate 1/2.
    pairs = [SeedPair(_test_table([0.5]), _test_table([0.5])),
             SeedPair(_test_table([1.0]), _test_table([0.0]))]
    d = paired_bootstrap(pairs, FIGURES["pass@1"], resamples=2000, seed=0)
    assert (d.diff, d.lo, d.hi, d.seeds) == (0.5, 0.0, 1.0, 2)


def test_what_a_comparison_could_detect_worked_by_hand():
    # The two seeds above: resampled differences 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4,
    # so the bootstrap SD is sqrt(3/8 - 1/4) = sqrt(1/8), and mde = (1.960 + 0.842) sqrt(1/8)
    # = 0.99 (the resamples only approximate the SD). Per-seed differences 0 and 1: mean 1/2,
    # sample SD sqrt(1/2); seeds_needed = ceil((2.8016 * 0.7071 / 0.5)^2) = ceil(15.70) = 16.
    pairs = [SeedPair(_test_table([0.5]), _test_table([0.5])),
             SeedPair(_test_table([1.0]), _test_table([0.0]))]
    d = paired_bootstrap(pairs, FIGURES["pass@1"], resamples=4000, seed=0)
    z = 1.959964 + 0.841621
    assert d.mde == pytest.approx(z * (1 / 8) ** 0.5, rel=0.03)
    assert d.seeds_needed == 16 == int(np.ceil((z * 0.5 ** 0.5 / 0.5) ** 2))
    # one seed of two test queries differing by 1 and 0: a query resample has the same three
    # outcomes, so the same mde; seeds_needed needs 2 seeds
    one = paired_bootstrap([SeedPair(_test_table([1.0, 0.0]), _test_table([0.0, 0.0]))],
                           FIGURES["pass@1"], resamples=4000, seed=0)
    assert one.seeds_needed is None and one.mde == pytest.approx(z * (1 / 8) ** 0.5, rel=0.03)
    same = paired_bootstrap(pairs[:1] * 2, FIGURES["pass@1"])
    assert same.seeds_needed is None and same.mde == 0.0


def test_a_null_verdict_reads_with_what_it_could_detect():
    cell = {"arm": "critique", "reference": "rs", "round": 1, "figure": "pass@1",
            "key": "pass@1", "seeds": [0, 1], "diff": 0.01, "lo": -0.05, "hi": 0.07,
            "verdict": "no difference detected", "mde": 0.0812, "seeds_needed": 40}
    lines = comparison_markdown({"confidence": 0.95, "resamples": 2000, "cells": [cell]})
    assert any("no difference detected (detectable: ±0.08)" in line for line in lines)
    lines = comparison_markdown({"confidence": 0.95, "resamples": 2000,
                                 "cells": [{**cell, "verdict": "higher", "lo": 0.01}]})
    assert any("] higher |" in line for line in lines)


def test_identical_arms_contain_zero_and_a_shift_excludes_it():
    rng = np.random.default_rng(3)
    levels = [1] * 20 + [2] * 20
    seeds = [_test_table(list(rng.integers(0, 5, 40) / 4), levels) for _ in range(3)]
    same = paired_bootstrap([SeedPair(t, t) for t in seeds], FIGURES["acc@H"])
    assert same.diff == 0.0 and same.lo <= 0.0 <= same.hi
    assert same.verdict == "no difference detected"

    def shifted(t: pd.DataFrame) -> pd.DataFrame:  # one more correct sample of 4 on every query
        up = t.copy()
        up["c"] = np.minimum(up["c"] + 1, 4)
        up["solve"] = up["c"] / 4
        return up

    up = paired_bootstrap([SeedPair(shifted(t), t) for t in seeds], FIGURES["pass@1"])
    assert up.lo > 0 and up.verdict == "higher"
    down = paired_bootstrap([SeedPair(t, shifted(t)) for t in seeds], FIGURES["pass@1"])
    assert down.hi < 0 and down.verdict == "lower"
    assert down.diff == pytest.approx(-up.diff)


def test_verdicts_and_undefined_figures():
    assert verdict(0.01, 0.2) == "higher"
    assert verdict(-0.2, -0.01) == "lower"
    assert verdict(0.0, 0.3) == "no difference detected"  # touching 0 is not excluding it
    no_paths = pd.DataFrame({"level": [1, 1], "rows": [1, 0], "paths": [np.nan, np.nan]})
    d = paired_bootstrap([SeedPair(no_paths, no_paths)], FIGURES["distinct_paths"])
    assert d.diff is None and d.verdict == "undefined"


def test_query_weights_resample_within_each_level():
    levels = np.array([1, 1, 1, 2, 2, 3])
    w = query_weights(levels, 500, np.random.default_rng(0))
    assert w.shape == (500, 6)
    assert (w[:, :3].sum(1) == 3).all() and (w[:, 3:5].sum(1) == 2).all() and (w[:, 5] == 1).all()
    assert len({tuple(row) for row in w[:, :3]}) == 10  # all multisets of 3 from 3 occur


# ---------------------------------------------------------------------------------------------
# Figures of a resample = the metric functions on the resampled frames
# ---------------------------------------------------------------------------------------------

POOL = pd.DataFrame({"query_id": ["a", "b", "c", "d", "e"], "difficulty": [1, 1, 2, 2, 2]})
SAMPLES = pd.DataFrame({"query_id": list("aabbccddee"), "correct": [1, 1, 1, 0, 1, 0, 0, 0, 1, 1],
                        "origin": "sample", "answer": "1"}).astype({"correct": bool})
TRAIN = pd.DataFrame({"query_id": ["a", "a", "b", "c", "e", "e", "e"], "origin": "sample",
                      "completion": ["4*3=12", "3*4=12", "1+1=2", "2+2=4", "x", "y", "x"]})
EVAL = pd.DataFrame({"query_id": list("ppppqqqqrrrr"), "difficulty": [1] * 4 + [2] * 8,
                     "sample_idx": [0, 1, 2, 3] * 3, "answer": "1",
                     "correct": [1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0]}).astype({"correct": bool})


def _unused(texts: list[str]) -> list[list[int]]:
    raise AssertionError("distinct_paths needs no token ids")


def _pool_table() -> pd.DataFrame:
    table = per_pool_query(POOL, SAMPLES, TRAIN)
    keys = solution_keys(TRAIN["completion"].tolist())
    table["paths"] = paths_per_query(TRAIN["query_id"].tolist(), keys).reindex(table.index)
    return table


def _repeat(frame: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Each query's rows `counts[q]` times, copy j under the new query id q#j."""
    parts = [frame[frame["query_id"] == q].assign(query_id=f"{q}#{j}")
             for q, n in counts.items() for j in range(n)]
    return pd.concat(parts, ignore_index=True)


def test_a_resample_recomputes_the_metric_functions():
    pool_table, test_table = _pool_table(), per_test_query(EVAL)
    counts = {"a": 0, "b": 2, "c": 2, "d": 0, "e": 1}  # within levels: 2 of level 1, 3 of level 2
    w = np.array([[counts[q] for q in pool_table.index]], dtype=float)
    tail = tail_metrics(_repeat(POOL, counts), _repeat(SAMPLES, counts), _repeat(TRAIN, counts),
                        num_samples=2)
    div = diversity_metrics(_repeat(TRAIN, counts), SAMPLES, solution_key=None,
                            token_ids=_unused, vocab_size=10, enabled={"distinct_paths"})
    assert FIGURES["coverage@H"](pool_table, w)[0] == pytest.approx(tail["coverage@2"])
    assert FIGURES["tail_ratio"](pool_table, w)[0] == pytest.approx(tail["tail_ratio"])
    assert FIGURES["distinct_paths"](pool_table, w)[0] == pytest.approx(div["distinct_paths"])

    test_counts = {"p": 1, "q": 0, "r": 2}
    w = np.array([[test_counts[q] for q in test_table.index]], dtype=float)
    out = outcome_metrics(_repeat(EVAL, test_counts), pass_ks=[1])
    assert FIGURES["pass@1"](test_table, w)[0] == pytest.approx(out["pass@1"])
    assert FIGURES["acc@H"](test_table, w)[0] == pytest.approx(out["acc@2"])

    # Without weights: the round's own figures, exactly as metrics.json holds them.
    tail = tail_metrics(POOL, SAMPLES, TRAIN, num_samples=2)
    assert FIGURES["tail_ratio"](pool_table, None) == tail["tail_ratio"]
    assert FIGURES["coverage@H"](pool_table, None) == tail["coverage@2"]
    assert FIGURES["pass@1"](test_table, None) == outcome_metrics(EVAL, [1])["pass@1"]


# ---------------------------------------------------------------------------------------------
# Over run folders
# ---------------------------------------------------------------------------------------------


def _round(rng: np.random.Generator, arm: str) -> dict[str, pd.DataFrame]:
    """A countdown-like round: 6 pool queries per level 2, 3 (K = 2), 5 test queries per level
    (n = 4). `critique` also trains on every level-3 query; the test samples are shared."""
    pool = pd.DataFrame({"query_id": [f"q{i}" for i in range(12)], "difficulty": [2] * 6 + [3] * 6})
    ok = rng.random(24) < np.repeat([0.7] * 6 + [0.2] * 6, 2)
    steps = ["2+3=5\n5*4=20", "3+2=5\n4*5=20", "4*5=20\n20-3=17"]  # the first two: one path
    samples = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(24)], "query_id": np.repeat(pool["query_id"], 2),
        "difficulty": np.repeat(pool["difficulty"], 2), "prompt": "p",
        "completion": [steps[i % 3] for i in range(24)], "answer": "20", "correct": ok,
        "origin": "sample", "num_tokens": 10})
    train = samples[samples["correct"] | ((arm == "critique") & (samples["difficulty"] == 3))]
    train = train[["sample_id", "query_id", "difficulty", "prompt", "completion", "origin"]]
    evals = pd.DataFrame({
        "query_id": np.repeat([f"t{i}" for i in range(10)], 4),
        "difficulty": np.repeat([2] * 5 + [3] * 5, 4), "sample_idx": list(range(4)) * 10,
        "completion": "c", "answer": "20", "correct": rng.random(40) < 0.5})
    return {"pool": pool, "samples": samples, "train": train, "eval": evals}


def make_experiment(root, task_seed: int = 0):
    """rs and critique over seeds 0-2, rounds 0-1, with metrics.json from the metric functions."""
    from selftrain.tasks import make_task

    task = make_task("countdown", seed=task_seed, levels=[2, 3])
    for arm in ("rs", "critique"):
        for seed in (0, 1, 2):
            run = root / arm / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(
                f"task:\n  name: countdown\n  args: {{seed: {task_seed}, levels: [2, 3]}}\n")
            for k in (0, 1):
                d = run / f"round_{k}"
                d.mkdir()
                # The eval rows depend on the seed and round only: both arms get the same ones.
                frames = _round(np.random.default_rng(100 * seed + k), arm)
                for name in ("samples", "train", "eval"):
                    frames[name].to_parquet(d / f"{name}.parquet")
                metrics = tail_metrics(frames["pool"], frames["samples"], frames["train"], 2)
                metrics.update(outcome_metrics(frames["eval"], [1]))
                metrics.update(diversity_metrics(
                    frames["train"], frames["samples"], solution_key=task.solution_key,
                    split_steps=task.split_steps, token_ids=_unused, vocab_size=10,
                    enabled={"distinct_paths"}))
                (d / "metrics.json").write_text(json.dumps(metrics))


def test_compare_runs_over_run_folders(tmp_path):
    make_experiment(tmp_path)
    result = compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=500)
    json.dumps(result)  # JSON-able as it is
    assert result["baseline"] == "rs" and result["resamples"] == 500
    cells = {(c["round"], c["figure"]): c for c in result["cells"]}
    # 5 figures, and the format figures of the test samples (all of no format: 3)
    assert len(cells) == 2 * (5 + 3) and {c["arm"] for c in result["cells"]} == {"critique"}
    for k in (0, 1):
        # critique trains on every level-3 query: its hard coverage is 1, rs's well below.
        cov = cells[k, "coverage@H"]
        assert cov["key"] == "coverage@3" and cov["arm_mean"] == 1.0 and cov["verdict"] == "higher"
        assert cells[k, "tail_ratio"]["verdict"] == "higher"
        # Same test samples in both arms: no difference, exactly.
        p = cells[k, "pass@1"]
        assert (p["diff"], p["lo"], p["hi"]) == (0.0, 0.0, 0.0)
        assert p["verdict"] == "no difference detected" and p["seeds"] == [0, 1, 2]
    # distinct_paths with the countdown task's solution key (operands of + and * sorted, so the
    # first two step texts are one path), as metrics.json has it; the default key differs.
    written = [json.loads((tmp_path / "rs" / f"seed{s}" / "round_0" / "metrics.json").read_text())
               for s in (0, 1, 2)]
    mean = sum(m["distinct_paths"] for m in written) / 3
    assert cells[0, "distinct_paths"]["reference_mean"] == pytest.approx(mean)
    train = pd.read_parquet(tmp_path / "rs" / "seed0" / "round_0" / "train.parquet")
    default = paths_per_query(train["query_id"].tolist(), solution_keys(train["completion"]))
    assert default.mean() > written[0]["distinct_paths"]

    lines = comparison_markdown(result)
    assert "`critique` − `rs`:" in lines
    row = next(line for line in lines if line.startswith("| 1 | 3 |"))
    assert row.count("higher") >= 2 and "+0.000 [+0.000, +0.000] no difference detected" in row

    # report.md shows comparison.json of the experiment folder below its per-round table.
    (tmp_path / "comparison.json").write_text(json.dumps(result))
    for run in tmp_path.glob("*/seed*"):
        (run / "manifest.json").write_text(json.dumps(
            {"experiment": tmp_path.name, "arm": run.parent.name, "seed": run.name[4:]}))
    text = write_report([tmp_path], tmp_path / "report").read_text()
    section = text[text.index(f"### Arm comparisons: `{tmp_path.name}`"):]
    assert row in section.splitlines()


def test_compare_runs_refuses_inconsistent_folders_and_unknown_arms(tmp_path):
    make_experiment(tmp_path)
    path = tmp_path / "critique" / "seed1" / "round_1" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["tail_ratio"] += 0.1  # metrics.json no longer matches its parquet files
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"seed1/round_1: tail_ratio recomputed .* inconsistent"):
        compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=50)
    with pytest.raises(ValueError, match="not among the arms"):
        compare_runs(tmp_path, ["rs", "critique"], [0], "rs", pairs=[("critique", "balanced")])
