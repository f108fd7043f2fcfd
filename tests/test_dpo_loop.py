"""A dpo arm end to end (the step_dpo arm of configs/countdown_prefs.yaml, shrunk): round 0's
filter writes pairs.parquet instead of a training set, round 1's finetune learns from them on
the training ranks, and metrics.json holds the pair figures and TRL's training figures, each
equal to a recomputation from the run folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import small_config

from selftrain.arms.arm import Arm
from selftrain.arms.pairs import build_pairs
from selftrain.loop.driver import run_arm
from selftrain.metrics.pairs import pair_metrics
from selftrain.runfolder.schemas import read_critiques, read_samples
from selftrain.tasks import make_task
from selftrain.train.dpo import FIGURES


def test_step_dpo_arm(tmp_path, ray_cluster, model_cache):
    """Round 0 builds pairs, round 1 trains on them (reference once), figures recomputed."""
    cfg = small_config(tmp_path, model_cache, "tracking.enabled=false", "arm.name=critique",
                       "train.objective=dpo", "refine.attempts=2",
                       config="countdown_prefs.yaml")
    history = run_arm(cfg, "step_dpo")
    run = tmp_path / "runs" / cfg.experiment / "step_dpo" / "seed0"
    r0, r1 = run / "round_0", run / "round_1"
    assert not (r0 / "train.parquet").exists()
    pairs = pd.read_parquet(r0 / "pairs.parquet")
    assert list(pairs.columns) == ["prompt", "chosen", "rejected", "query_id", "difficulty",
                                   "origin", "chosen_id", "rejected_id", "chosen_mask",
                                   "rejected_mask"]
    assert pairs[["chosen_mask", "rejected_mask"]].isna().all().all()  # a text task masks nothing
    assert len(pairs) > 0 and set(pairs["origin"]) <= {"outcome", "step"}

    # the file is what the arm's rule builds from the round's samples and critiques
    task = make_task(cfg.task.name, **cfg.task.args)
    samples, critiques = read_samples(r0 / "samples.parquet"), read_critiques(r0 / "critiques.parquet")
    again = pd.DataFrame([p.row() for p in build_pairs(cfg, samples, critiques,
                                                       Arm.of(cfg.arm).partition(task.solution_key))])
    pd.testing.assert_frame_equal(again, pairs, check_dtype=False)
    by_id = {s.sample_id: s for s in samples}
    for row in pairs.itertuples():
        assert by_id[row.chosen_id].correct and not by_id[row.rejected_id].correct

    m0 = json.loads((r0 / "metrics.json").read_text())
    frame = pd.read_parquet(r0 / "samples.parquet")
    pool = frame.drop_duplicates("query_id")[["query_id", "difficulty"]]
    for key, value in pair_metrics(pool, frame, pairs).items():
        assert m0[key] == pytest.approx(value), key
    assert m0["train_size"] == 0 and m0 == pytest.approx(history[0])

    manifest = json.loads((run / "manifest.json").read_text())
    ranks = manifest["rounds"]["1"]["finetune"]["workers"]
    assert ranks[0]["examples"] == len(pairs) and ranks[0]["reference_passes"] == 1
    m1 = json.loads((r1 / "metrics.json").read_text())
    for key in FIGURES:  # logged in the round the finetune produced
        assert m1[key] == pytest.approx(ranks[0][key]) and key not in m0
    assert 0 <= m1["train/rewards/accuracies"] <= 1
    assert m1["train/rewards/margins"] == pytest.approx(
        m1["train/rewards/chosen"] - m1["train/rewards/rejected"])
    assert (r1 / "checkpoint" / "config.json").is_file() and (r1 / "pairs.parquet").is_file()
