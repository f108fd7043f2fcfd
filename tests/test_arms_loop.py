"""The balanced and diverse arms end to end, on a real Ray cluster with the tests' small countdown
config (round 0 only): what a user would look at in samples.parquet, train.parquet,
metrics.json and the manifest."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import small_config

from selftrain.loop.driver import run_arm
from selftrain.tasks import make_task

K = 4  # rollout.num_samples of the small config


def round_files(tmp, cfg, label):
    rd = tmp / "runs" / cfg.experiment / label / "seed0" / "round_0"
    manifest = json.loads((rd.parent / "manifest.json").read_text())
    return (pd.read_parquet(rd / "samples.parquet"), pd.read_parquet(rd / "train.parquet"),
            json.loads((rd / "metrics.json").read_text()), manifest["rounds"]["0"]["generate"])


def keys_of(cfg, completions):
    task = make_task(cfg.task.name, **cfg.task.args)
    return [task.solution_key(task.split_steps(c)) for c in completions]


def waves_of(samples: pd.DataFrame) -> pd.Series:
    return samples["sample_id"].str.rsplit("-s", n=1).str[1].astype(int) // K


def check_numbering_and_cost(samples, metrics, record, max_waves):
    """Ids r0-<query>-s0.. continue without gaps over the waves; first pass = K per query;
    gen_tokens count every sample; solve rates read the first pass only."""
    for qid, group in samples.groupby("query_id"):
        assert list(group["sample_id"]) == [f"r0-{qid}-s{j}" for j in range(len(group))]
        assert len(group) % K == 0 and len(group) <= max_waves * K
    first = samples[samples["origin"] == "sample"]
    assert set(samples["origin"]) <= {"sample", "extra"}
    assert (first.groupby("query_id").size() == K).all()
    assert (samples[samples["origin"] == "extra"].pipe(waves_of) >= 1).all()
    assert metrics["gen_tokens"] == samples["num_tokens"].sum()
    assert metrics["samples_per_query"] == K == record["samples_per_query"]
    assert record["extra_samples"] == (samples["origin"] == "extra").sum()
    assert record["waves"] == waves_of(samples).max() + 1
    assert metrics["solve_rate_mean"] == pytest.approx(first.groupby("query_id")["correct"].sum()
                                                       .mean() / K)


def test_balanced_arm_samples_each_query_to_its_level_target(tmp_path, ray_cluster,
                                                             model_cache):
    cfg = small_config(tmp_path, model_cache, "rounds=0", "tracking.enabled=false",
                       "arm.sampling=balanced", "arm.balanced.mode=prop2diff",
                       "arm.balanced.target=3", "arm.max_waves=3")
    run_arm(cfg, "balanced")
    samples, train, metrics, record = round_files(tmp_path, cfg, "balanced")
    check_numbering_and_cost(samples, metrics, record, max_waves=3)
    assert record["extra_samples"] > 0
    for qid, group in samples.groupby("query_id"):
        level = int(group["difficulty"].iloc[0])
        target = math.ceil(3 * level / 4)  # prop2diff, hardest level 4 wants 3
        before_last = group[waves_of(group) < waves_of(group).max()]
        # a query drew another wave only while it held fewer correct samples than its target,
        # and it stopped at its target or at the cap of 3 waves
        assert before_last["correct"].sum() < target or len(group) == K
        assert group["correct"].sum() >= target or len(group) == 3 * K
        # it trains on its first `target` distinct correct samples
        correct = group[group["correct"]].drop_duplicates("completion")
        rows = train[train["query_id"] == qid]
        assert list(rows["sample_id"]) == list(correct["sample_id"][:target])
    assert metrics["train_size"] == len(train)


def test_diverse_arm_trains_on_distinct_paths_first(tmp_path, ray_cluster, model_cache):
    cfg = small_config(tmp_path, model_cache, "rounds=0", "tracking.enabled=false",
                       "arm.sampling=distinct", "arm.selection=diverse", "arm.per_query_cap=2",
                       "arm.max_waves=3")
    run_arm(cfg, "diverse")
    samples, train, metrics, record = round_files(tmp_path, cfg, "diverse")
    check_numbering_and_cost(samples, metrics, record, max_waves=3)
    samples["key"] = keys_of(cfg, samples["completion"])
    train["key"] = keys_of(cfg, train["completion"])
    for qid, group in samples.groupby("query_id"):
        wave = waves_of(group)
        for w in range(1, wave.max() + 1):  # a wave only for queries with one path so far
            assert group[(wave < w) & group["correct"]]["key"].nunique() == 1
        rows = train[train["query_id"] == qid]
        paths = group[group["correct"]]["key"].nunique()
        assert len(rows) <= 2 and rows["key"].nunique() == min(2, paths)
    assert metrics["train_size"] == len(train) > 0


def test_critique_filter_composes_with_balanced_sampling_and_diverse_selection(
        tmp_path, ray_cluster, model_cache):
    cfg = small_config(tmp_path, model_cache, "rounds=0", "tracking.enabled=false",
                       "arm.name=critique", "critic.name=countdown-oracle", "refine.attempts=1",
                       "arm.sampling=balanced", "arm.balanced.target=2", "arm.max_waves=2",
                       "arm.selection=diverse")
    run_arm(cfg, "critique_balanced_diverse")
    rd = tmp_path / "runs" / cfg.experiment / "critique_balanced_diverse" / "seed0" / "round_0"
    samples = pd.read_parquet(rd / "samples.parquet").set_index("sample_id")
    critiques = pd.read_parquet(rd / "critiques.parquet").set_index("sample_id")
    train = pd.read_parquet(rd / "train.parquet")
    assert set(samples["origin"]) == {"sample", "extra", "refine"}
    assert set(critiques.index) == set(samples.index)  # extra waves are critiqued and refined
    assert samples.loc[samples["origin"] == "refine", "parent_id"].isin(
        samples.index[samples["origin"] == "extra"]).any()
    for sid in train["sample_id"]:
        assert samples.loc[sid, "correct"] and critiques.loc[sid, "first_error"] == -1
    assert (train.groupby("query_id").size() <= 2).all()
