"""One round of rejection sampling on countdown with `rollout.backend: vllm`, end to end.

The vLLM engine starts inside the rollout-worker Ray actor (on CPU it spawns its engine-core and
worker processes from there), serves round 0, takes the round-1 checkpoint in place
(`load_weights`) and serves round 1; the run folder must follow the same contract as with the
hf backend. Runs in .venv-vllm under scripts/test_vllm.sh; skipped where vLLM does not import.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from conftest import require_vllm, small_config


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, ray_cluster, model_cache):
    require_vllm()
    from selftrain.loop.driver import run_arm

    tmp = tmp_path_factory.mktemp("vllm")
    cfg = small_config(tmp, model_cache, "rollout.backend=vllm", "experiment=countdown_vllm")
    history = run_arm(cfg, "rs")
    return cfg, history, tmp / "runs" / cfg.experiment / "rs" / "seed0"


def test_a_vllm_round_follows_the_run_folder_contract(vllm_run):
    from selftrain.metrics import outcome_metrics
    from selftrain.runfolder.folder import verify

    cfg, history, run = vllm_run
    assert sorted(history) == [0, 1]
    for k in (0, 1):
        rd = run / f"round_{k}"
        samples = pd.read_parquet(rd / "samples.parquet")
        evals = pd.read_parquet(rd / "eval.parquet")
        assert len(samples) == 8 * 3 * cfg.rollout.num_samples  # SMALL_TASK: 8 per level, 3 levels
        assert len(evals) == 4 * 3 * cfg.eval.num_samples
        assert (samples["num_tokens"] > 0).all()
        assert (samples["num_tokens"] <= cfg.rollout.max_new_tokens).all()
        metrics = json.loads((rd / "metrics.json").read_text())
        assert metrics["gen_tokens"] == samples["num_tokens"].sum()
        assert metrics["pass@1"] == pytest.approx(outcome_metrics(evals, [1, 2])["pass@1"])
    assert (run / "round_1" / "checkpoint" / "config.json").is_file()
    assert verify(run) == []


def test_the_engine_serves_the_new_checkpoint_in_round_1(vllm_run):
    """Evaluation is seeded by the run seed only, so every round samples the same prompts with
    the same seeds: the texts change exactly when the live weights changed. (A weak base model
    can leave round 0 without training rows; round 1's checkpoint then equals the base.)"""
    from safetensors.torch import load_file

    _, _, run = vllm_run
    manifest = json.loads((run / "manifest.json").read_text())
    base = load_file(f"{manifest['base_model']}/model.safetensors")
    new = load_file(run / "round_1" / "checkpoint" / "model.safetensors")
    weights_changed = any(not base[name].equal(new[name]) for name in base)
    before = pd.read_parquet(run / "round_0" / "eval.parquet")["completion"].tolist()
    after = pd.read_parquet(run / "round_1" / "eval.parquet")["completion"].tolist()
    assert (before != after) == weights_changed


def engine_processes(marker: str) -> list:
    """vLLM engine processes started under this session's Ray cluster: vLLM titles them
    "VLLM::…", and they inherit the cluster's PYTHONPATH, which holds this session's `marker`
    folder (so another user's vLLM on the machine is never counted)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
            if "VLLM" in title and marker in proc.environ().get("PYTHONPATH", ""):
                found.append(proc)
        except Exception:  # gone, or not ours to read
            continue
    return found


def test_no_engine_process_outlives_the_run(vllm_run, plugin_dir):
    """run_arm ends by killing the rollout actor; its spawned engine processes must follow."""
    deadline = time.time() + 60
    while (left := engine_processes(str(plugin_dir))) and time.time() < deadline:
        time.sleep(2)
    assert left == []
