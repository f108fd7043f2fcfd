"""End to end: the graded open-ended task (lexicon_lines, with its distinctiveness term) through
the real loop, on a real local Ray cluster with its own tiny base model: scores on samples and
eval rows equal a recomputation, correct = passing, the top-m filter keeps the best scores, and
the score figures equal their recomputation from eval.parquet."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import REPO

from selftrain.config import load_config
from selftrain.loop.driver import run_arm
from selftrain.metrics import outcome_metrics, score_metrics
from selftrain.tasks import make_task

TASK = {"seed": 0, "levels": [2, 3], "breadth": 4, "distinct_weight": 0.5,
        "pass_threshold": 0.75, "train_per_level": 6, "test_per_level": 3}


def test_one_graded_round_through_the_loop(tmp_path, ray_cluster, model_cache):
    cfg = load_config(REPO / "configs" / "lexicon_lines_rs.yaml", [
        "rounds=1", "rollout.num_samples=4", "eval.num_samples=4", "eval.pass_k=[1,4]",
        "train.epochs=1", "metrics.disabled=[embed_div]", "arm.name=top_m", "arm.top_m=2",
        f"run_root={tmp_path / 'runs'}", f"model.cache_dir={model_cache}",
        f"task.args={json.dumps(TASK)}"])
    history = run_arm(cfg, "top_m")
    task = make_task("lexicon_lines", **TASK)
    queries = {q.query_id: q for q in task.queries("train") + task.queries("test")}
    run = tmp_path / "runs" / cfg.experiment / "top_m" / "seed0"
    for k in (0, 1):
        rd = run / f"round_{k}"
        samples = pd.read_parquet(rd / "samples.parquet")
        evals = pd.read_parquet(rd / "eval.parquet")
        train = pd.read_parquet(rd / "train.parquet")
        metrics = json.loads((rd / "metrics.json").read_text())
        for df in (samples, evals):
            for qid, group in df.groupby("query_id"):
                want = task.score_batch(queries[qid], list(group["completion"]))  # one call per query
                assert list(group["score"]) == pytest.approx(want), (k, qid)
                assert list(group["correct"]) == [s >= 0.75 for s in want]
        # top_m: each query keeps its 2 best distinct completions by score
        for qid, group in samples.drop_duplicates(["query_id", "completion"]).groupby("query_id"):
            best = sorted(group["score"], reverse=True)[:2]
            assert sorted(train[train["query_id"] == qid]["sample_id"].map(
                samples.set_index("sample_id")["score"]), reverse=True) == pytest.approx(best)
        expected = outcome_metrics(evals, [1, 4]) | score_metrics(evals)
        assert {"score_mean", "score_mean@2", "score_mean@3"} <= set(metrics)
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value), key
        assert metrics == pytest.approx(history[k])
    assert 0.0 < history[0]["score_mean"] <= 1.0
