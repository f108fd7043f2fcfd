"""`make bench` in its quick mode: the raw side used the loop stage's own weights (by file
hash), reproduced the loop's samples, and every figure equals its recomputation from the
repetitions it keeps."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from selftrain.metrics.embed import resolve_precision

REPO = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=str(REPO), SELFTRAIN_BENCH_QUICK="1")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"),
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "benchmark.json").read_text())


def test_the_raw_side_used_the_loop_stages_weights(bench):
    out, result = bench
    w = result["weights"]
    headline = out / f"bench-n{result['headline_size']}" / "rs" / "seed0"
    # generation: round 1's policy, the checkpoint its finetune wrote and the worker held
    policy = headline / "round_1" / "checkpoint" / "model.safetensors"
    assert w["generate"]["sha256"] == w["raw"]["generate"]["sha256"] == _sha(policy)
    # finetune: round 1's init, which is the base model (train.init previous, k = 1)
    manifest = json.loads((headline / "manifest.json").read_text())
    init = Path(manifest["rounds"]["1"]["finetune"]["init_path"]) / "model.safetensors"
    assert w["finetune"]["sha256"] == w["raw"]["finetune"]["sha256"] == _sha(init)
    assert w["generate"]["sha256"] != w["finetune"]["sha256"]
    # the same weights, chunks and seeds give the loop's very samples
    assert result["identical_share"] == {"generate": 1.0, "evaluate": 1.0}
    for run in result["runs"]:
        threads = run["loop"]["torch_threads"]
        assert (threads["rollout_worker"], threads["training_rank"]) == (1, 1)
        assert run["raw"]["torch_threads"] == 1
        # every process froze what it keeps (selftrain/heap.py): a full collection skips it
        assert min(run["loop"]["frozen_objects"].values()) > 50_000, run["loop"]["frozen_objects"]
        # and keeps freed memory, the raw side's process included (like for like)
        assert set(run["loop"]["malloc"].values()) == {run["raw"]["malloc"]} == {"kept"}
        # each side's finetune says how much of it was its own CPU
        for side, wall in ((run["loop"], run["loop"]["stages"]["finetune"]),
                           (run["raw"], run["raw"]["finetune_seconds"])):
            assert 0 < side["finetune_cpu_seconds"] <= wall + 0.02, (side, wall)
    # the raw side's one thread is its own: every loop run's driver had the process's count
    assert len({run["loop"]["torch_threads"]["driver"] for run in result["runs"]}) == 1


def test_every_figure_is_recomputed_from_its_repetitions(bench):
    _, result = bench
    runs = result["runs"]
    assert [(r["size"], r["rep"]) for r in runs] == [(4, 0), (8, 0), (8, 1), (4, 1)]
    at = [r for r in runs if r["size"] == result["headline_size"]]
    for key, s in result["spreads"].items():
        reps = [r["ratios"][key] for r in at]
        assert s["reps"] == reps and s["median"] == statistics.median(reps)
        assert s["min"] <= s["median"] <= s["max"] and result["ratios"][key] == s["median"]
    for r in runs:
        assert r["ratios"]["generate_vs_raw"] == pytest.approx(
            r["raw"]["generate_seconds"] / r["loop"]["stages"]["generate"])
    fit = result["fits"]["generate"]["loop"]
    xs = [r["items"]["generate"] for r in runs]
    ys = [r["loop"]["stages"]["generate"] for r in runs]  # no warm_wait in generate
    slope = statistics.linear_regression(xs, ys).slope
    assert fit["per_item_seconds"] == pytest.approx(slope)
    assert result["ratios"]["fixed_seconds"]["generate"] == fit["fixed_seconds"]
    ft = [r["loop"]["stages"]["finetune"] - r["loop"]["parts"]["time/finetune/warm_wait"]
          for r in runs]
    assert result["fits"]["finetune"]["loop"]["per_item_seconds"] == pytest.approx(
        statistics.linear_regression([r["items"]["finetune"] for r in runs], ft).slope)
    raw_fit = result["fits"]["generate"]["raw"]
    assert result["ratios"]["generate_slope_vs_raw"] == pytest.approx(
        raw_fit["per_item_seconds"] / fit["per_item_seconds"])


def test_parts_say_where_a_stages_seconds_went(bench):
    out, result = bench
    for r in result["runs"]:
        parts, stages = r["loop"]["parts"], r["loop"]["stages"]
        for stage in ("generate", "evaluate", "finetune"):
            for part in ("weight_load", "compute", "dispatch_gather", "write"):
                assert f"time/{stage}/{part}" in parts
            # the named parts cover the stage's own clock: what is left ("other") is small
            assert abs(parts[f"time/{stage}/other"]) <= 0.05 + 0.1 * stages[stage]
        assert "time/finetune/warm_wait" in parts
        assert parts["time/generate/compute"] > 0 and parts["time/finetune/compute"] > 0
        # the policy's diversity figures: the metrics stage's own part, within that stage
        spent = parts["time/metrics/policy_diversity"]
        assert 0 < spent <= stages["metrics"]
        assert r["ratios"]["policy_diversity_share"] == spent / r["loop"]["round_seconds"]
        assert r["ratios"]["policy_diversity_cold_share"] > 0
        # the cost where no core is idle adds a prefetch thread's seconds back (none by default)
        assert r["ratios"]["policy_diversity_compute_share"] >= r["ratios"]["policy_diversity_share"]
        assert r["ratios"]["evaluate_vs_raw"] > 0
        manifest = json.loads((out / f"bench-n{r['size']}" / "rs" / "seed0" / "manifest.json")
                              .read_text())  # the default: no prefetch, all in the metrics stage
        assert manifest["rounds"]["0"]["metrics"]["embed_prefetch_s"] == 0
        # MiniLM's arithmetic as `metrics.embed_precision: auto` resolves it on this machine
        assert (manifest["rounds"]["1"]["metrics"]["embed_precision"] == r["embed_precision"]
                == resolve_precision("auto"))
