"""The search-agent task family through the same loop: multi-turn rollouts on Ray workers,
observation tokens masked from the loss, the multihop oracle critic and resume-from-turn."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import REPO

from selftrain.config import load_config
from selftrain.loop.driver import run_arm


@pytest.fixture(scope="module")
def multihop_run(tmp_path_factory, ray_cluster, model_cache):
    tmp = tmp_path_factory.mktemp("multihop")
    task_args = {"seed": 0, "levels": [1, 2], "train_per_level": 4, "test_per_level": 2,
                 "topk": 1, "max_turns": 3, "cache_dir": str(tmp / "corpus")}
    cfg = load_config(REPO / "configs" / "multihop_compare.yaml", [
        f"run_root={tmp / 'runs'}", f"model.cache_dir={model_cache}",
        f"task.args={json.dumps(task_args)}", "rounds=0", "arms={}", "arm.name=critique",
        "model.tiny.sft_steps=40", "model.tiny.sft_levels=[1]", "rollout.num_samples=2",
        "eval.num_samples=2", "eval.pass_k=[1,2]", "refine.attempts=1",
        "rollout.max_new_tokens=24", "metrics.disabled=[embed_div,self_bleu]",
    ])
    history = run_arm(cfg, "critique")
    return history, tmp / "runs" / cfg.experiment / "critique" / "seed0" / "round_0"


def test_trajectories_are_multi_turn_with_masked_observations(multihop_run):
    _, rd = multihop_run
    samples = pd.read_parquet(rd / "samples.parquet")
    assert len(samples[samples["origin"] == "sample"]) == 8 * 2
    for row in samples.itertuples():
        for start, end in row.loss_mask if row.loss_mask is not None else []:
            span = row.completion[start:end]
            assert span.startswith("\n<information>") or span.startswith("\nMy previous action")
        assert len(row.steps) <= 3 + 3  # turns, replayed ones included


def test_search_metrics_and_critiques_are_recorded(multihop_run):
    history, rd = multihop_run
    for key in ("searches_per_traj", "distinct_query_sets", "invalid_action_rate", "em", "subem"):
        assert key in history[0]
    # multihop checks answers by exact match, so em is pass@1 recomputed from eval.parquet
    assert history[0]["em"] == pytest.approx(history[0]["pass@1"])
    assert history[0]["em"] <= history[0]["subem"]
    critiques = pd.read_parquet(rd / "critiques.parquet")
    samples = pd.read_parquet(rd / "samples.parquet")
    assert set(critiques["sample_id"]) == set(samples["sample_id"])
    assert (critiques["critic"] == "multihop-oracle").all()
