"""The chaos harness (scripts/chaos.py, `make chaos`): its checks on hand-made run folders with
known differences, how it tells a run's processes apart, and a 3-trial run of it (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from chaos import phase, plan  # noqa: E402
from chaos_checks import same_files  # noqa: E402
from chaos_procs import CLUSTER, TARGETS, role  # noqa: E402


def _run_folder(path: Path, accuracy: float, seconds: float) -> Path:
    for k in (0, 1):
        rd = path / f"round_{k}"
        rd.mkdir(parents=True)
        pd.DataFrame({"sample_id": ["a", "b"], "reward": [1.0, 0.0]}).to_parquet(
            rd / "samples.parquet")
        (rd / "metrics.json").write_text(json.dumps(
            {"round": k, "pass@1": accuracy, "time/generate": seconds}))
    return path


def test_same_files_ignores_only_the_stage_seconds(tmp_path):
    ref = _run_folder(tmp_path / "ref", 0.5, 3.0)
    assert same_files(_run_folder(tmp_path / "slower", 0.5, 9.0), ref) == []
    assert same_files(_run_folder(tmp_path / "float32", 0.5 * (1 + 1e-8), 3.0), ref) == []
    assert same_files(_run_folder(tmp_path / "tiny", 0.5 + 2e-7, 3.0), ref) == []
    other = _run_folder(tmp_path / "other", 0.25, 3.0)
    assert same_files(other, ref) == ["round_0/metrics.json differs in ['pass@1']",
                                      "round_1/metrics.json differs in ['pass@1']"]


def test_same_files_names_an_altered_missing_or_extra_parquet(tmp_path):
    ref = _run_folder(tmp_path / "ref", 0.5, 3.0)
    run = _run_folder(tmp_path / "run", 0.5, 3.0)
    pd.DataFrame({"sample_id": ["a", "b"], "reward": [1.0, 1.0]}).to_parquet(
        run / "round_1" / "samples.parquet")
    (run / "round_0" / "samples.parquet").rename(run / "round_0" / "extra.parquet")
    problems = same_files(run, ref)
    assert problems[0] == ("parquet files differ: extra ['round_0/extra.parquet'], "
                           "missing ['round_0/samples.parquet']")
    assert problems[1].startswith("round_1/samples.parquet differs")
    assert len(problems) == 2


@pytest.mark.parametrize("cmdline, want", [
    (["ray::RolloutWorker.run"], "rollout worker"),
    (["ray::CriticWorker"], "critic worker"),
    (["ray::TrainerWorker.finetune"], "training rank"),
    (["ray::IDLE"], None),
    (["/v/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server", "--log_dir=/x"],
     "gcs_server"),
    (["/v/site-packages/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=/s"], "raylet"),
    (["/v/bin/python", "-u", "/v/site-packages/ray/dashboard/agent.py", "--node-ip-address=x"],
     "dashboard agent"),
    (["/v/bin/python", "-u", "/v/site-packages/ray/_private/runtime_env/agent/main.py"],
     "runtime-env agent"),
    (["/v/bin/python", "-m", "selftrain", "run", "cfg.yaml"], None),
])
def test_role_of_a_cluster_process(cmdline, want):
    assert role(cmdline) == want


def test_phase_is_the_stage_after_the_last_recorded_one(tmp_path):
    assert phase(tmp_path, 2) == "start-up"
    manifest = {"rounds": {"0": {s: {} for s in ("generate", "critique", "refine", "filter",
                                                 "evaluate", "metrics")},
                           "1": {"finetune": {}, "generate": {}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert phase(tmp_path, 2) == "round 1 · critique"
    del manifest["rounds"]["1"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert phase(tmp_path, 2) == "round 1 · finetune"
    assert phase(tmp_path, 0) == "end"


TIMELINE = [(0, "generate", 10.0, 2.0), (0, "critique", 12.0, 1.0), (0, "metrics", 13.0, 0.5),
            (1, "finetune", 13.5, 3.0)]


def test_plan_is_seeded_and_covers_every_target_and_stage():
    trials = plan(400, seed=0, timeline=TIMELINE)
    assert [(t.target, t.after, t.delay_s) for t in trials] == [
        (t.target, t.after, t.delay_s) for t in plan(400, 0, TIMELINE)]
    assert {t.target for t in trials} == (set(TARGETS) - {"ray cluster"}) | set(CLUSTER)
    # start-up (before round 0's first stage, 10 s in) or inside round 0's generate ...
    assert all(0.0 <= t.delay_s <= 12.0 for t in trials if t.after is None)
    assert any(t.delay_s > 10.0 for t in trials if t.after is None)
    # ... or within a later stage's reference seconds, counted from its predecessor's record
    assert {t.after for t in trials} == {None, (0, "generate"), (0, "critique"), (0, "metrics")}
    longest = {(0, "generate"): 1.0, (0, "critique"): 0.5, (0, "metrics"): 3.0}
    assert all(t.delay_s <= longest[t.after] for t in trials if t.after is not None)


@pytest.mark.slow
def test_three_chaos_trials_end_as_the_undisturbed_run():
    """`make chaos TRIALS=3` (one round after round 0): each killed run, carried on, equals
    the reference run, verifies, logged each round once to wandb and left no process."""
    out = Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp"))  # Ray's socket paths stay short
    try:
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "chaos.py"), "--trials",
                               "3", "--rounds", "1", "--out", str(out)],
                              capture_output=True, text=True, timeout=2400)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "chaos: 3/3 trials passed" in done.stdout
        rows = [line for line in (out / "chaos.md").read_text().splitlines()
                if line[:3] in {"| 0", "| 1", "| 2"}]
        assert len(rows) == 3 and all("| pass |" in row and "(pid " in row for row in rows)
    finally:
        shutil.rmtree(out, ignore_errors=True)
