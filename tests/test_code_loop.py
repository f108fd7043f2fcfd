"""End to end: one round of the critique arm on the embedded code task, on a real local Ray
cluster with the real tiny model: programs checked in the sandbox, the code-exec critic in a
critic worker, the code figures in metrics.json equal to a recomputation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import small_config

from selftrain.loop.driver import run_arm
from selftrain.metrics import code as figures
from selftrain.runfolder.folder import verify
from selftrain.tasks import make_task

CODE_TASK = {"seed": 0, "levels": [2, 3], "train_per_level": 6, "test_per_level": 3}


@pytest.fixture(scope="module")
def code_run(tmp_path_factory, ray_cluster, model_cache):
    tmp = tmp_path_factory.mktemp("code")
    cfg = small_config(tmp, model_cache, f"task.args={json.dumps(CODE_TASK)}",
                       "rollout.max_new_tokens=72", "model.tiny.sft_steps=300",
                       "arm.name=critique", "refine.attempts=2",
                       config="code_compare.yaml")
    history = run_arm(cfg, "critique")
    return cfg, history, tmp / "runs" / cfg.experiment / "critique" / "seed0"


def test_code_round_through_the_loop(code_run):
    cfg, history, run = code_run
    assert sorted(history) == [0, 1] and verify(run) == []
    task = make_task(cfg.task.name, **cfg.task.args)
    queries = {q.query_id: q for q in [*task.queries("train"), *task.queries("test")]}
    for k in (0, 1):
        rd = run / f"round_{k}"
        metrics = json.loads((rd / "metrics.json").read_text())
        samples = pd.read_parquet(rd / "samples.parquet")
        evals = pd.read_parquet(rd / "eval.parquet")
        train = pd.read_parquet(rd / "train.parquet")
        # the recorded verdicts are the sandbox's
        for frame in (samples, evals):
            again = task.run_programs([queries[q] for q in frame["query_id"]],
                                      frame["completion"].tolist())
            assert [r.passed for r in again] == frame["correct"].tolist()
        assert all(r.isolation == "namespaces" for r in again)
        groups = [[task.program_of(queries[q], c) for c in g["completion"]]
                  for q, g in evals.groupby("query_id")]
        assert metrics["eval_distinct_programs"] == pytest.approx(figures.distinct_programs(groups))
        assert metrics["eval_ast_distinct_n"] == pytest.approx(figures.ast_distinct_n(groups))
        if len(train):
            tgroups = [[task.program_of(queries[q], c) for c in g["completion"]]
                       for q, g in train.groupby("query_id")]
            assert metrics["distinct_programs"] == pytest.approx(figures.distinct_programs(tgroups))
        first = samples[samples["origin"] == "sample"]
        statuses = [r.status for r in task.run_programs(
            [queries[q] for q in first["query_id"]], first["completion"].tolist())]
        assert metrics["exec_error_share"] == pytest.approx(figures.status_shares(statuses)["exec_error_share"])
    critiques = pd.read_parquet(run / "round_0" / "critiques.parquet").set_index("sample_id")
    assert (critiques["critic"] == "code-exec").all() and len(critiques) > 0
    samples = pd.read_parquet(run / "round_0" / "samples.parquet").set_index("sample_id")
    failed = samples[(samples["origin"] == "sample") & ~samples["correct"]].index
    assert len(failed) > 0 and (critiques.loc[failed, "first_error"] >= 0).all()
    assert (samples["origin"] == "refine").any()  # repairs resumed from the flagged line
    # the base model learned the format: some programs pass
    assert json.loads((run / "round_0" / "metrics.json").read_text())["pass@1"] > 0


def test_mbpp_layout_through_the_loop(tmp_path, ray_cluster, model_cache):
    """The committed MBPP-layout fixture through one rs round, the policy a tiny model built
    from its reference programs (the CPU stand-in for an instruct coder)."""
    data = str(Path(__file__).resolve().parent / "data" / "mbpp_fixture.jsonl")
    args = {"train": data, "test": data, "layout": "mbpp"}
    cfg = small_config(tmp_path, model_cache, "task.name=code_data",
                       f"task.args={json.dumps(args)}", "model.tiny.sft_levels=[1,2,3,4]", "model.tiny.sft_steps=150",
                       "model.tiny.sft_batch_size=8", "rollout.max_new_tokens=96",
                       "arm.name=rs", "rounds=0", config="code_compare.yaml")
    history = run_arm(cfg, "rs")
    run = tmp_path / "runs" / cfg.experiment / "rs" / "seed0"
    assert verify(run) == []
    task = make_task(cfg.task.name, **cfg.task.args)
    queries = {q.query_id: q for q in task.queries("test")}
    evals = pd.read_parquet(run / "round_0" / "eval.parquet")
    again = task.run_programs([queries[q] for q in evals["query_id"]], evals["completion"].tolist())
    assert [r.passed for r in again] == evals["correct"].tolist()
    assert history[0]["eval_distinct_programs"] is not None
    assert history[0]["pass@1"] > 0  # it learned the six programs it was built from
