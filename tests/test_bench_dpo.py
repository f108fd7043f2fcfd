"""scripts/bench_dpo.py in its quick mode: the raw DPO loop read the very init file and
pairs.parquet the loop's finetune stage read (by file hash, against the run's manifest), did
the same work (the loop's last-epoch loss and final weights), and every figure equals its
recomputation from what the result keeps."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bench():
    out = Path(tempfile.mkdtemp(prefix="bdpo-", dir="/tmp"))  # Ray's socket paths stay short
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_dpo.py"), "--quick",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        yield json.loads((out / "bench_dpo.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_the_raw_loop_read_the_loop_stages_init_and_pairs(bench):
    assert len(bench["runs"]) == 2
    for run in bench["runs"]:
        folder = Path(run["folder"])
        manifest = json.loads((folder / "manifest.json").read_text())
        init = Path(manifest["rounds"]["1"]["finetune"]["init_path"]) / "model.safetensors"
        assert run["raw"]["init"]["sha256"] == run["loop"]["init"]["sha256"] == _sha(init)
        pairs = folder / "round_0" / "pairs.parquet"
        recorded = manifest["rounds"]["0"]["filter"]["files"]["round_0/pairs.parquet"]
        assert run["raw"]["pairs"]["sha256"] == recorded["sha256"] == _sha(pairs)
        assert recorded["rows"] > 0 and run["raw"]["steps"] == run["loop"]["steps"] > 0
        # the same work: the loop's figures and weights, to float noise
        assert run["loss_abs_diff"] < 1e-4 and run["max_weight_diff"] < 1e-4
        assert run["raw"]["torch_threads"] == 1


def test_every_figure_is_recomputed_from_what_it_keeps(bench):
    runs, spreads = bench["runs"], bench["spreads"]["dpo_finetune_vs_raw"]
    for run in runs:
        assert run["ratio"] == pytest.approx(run["raw"]["seconds"] / run["loop"]["seconds"])
    assert spreads["reps"] == [r["ratio"] for r in runs]
    assert bench["ratios"]["dpo_finetune_vs_raw"] == statistics.median(spreads["reps"])
    lora = bench["lora_state"]
    total = {k: lora[k]["state_mib"] + lora[k]["reference_mib"] for k in ("sft", "dpo")}
    assert bench["ratios"]["lora_dpo_state_vs_sft"] == pytest.approx(total["dpo"] / total["sft"])
    # LoRA-DPO holds one model: the reference is the adapters switched off, not a copy
    assert lora["dpo"]["param_mib"] == lora["sft"]["param_mib"]
    assert lora["dpo"]["reference_mib"] > 0 and lora["sft"]["reference_mib"] == 0
    assert lora["dpo"]["trainable_params"] == lora["sft"]["trainable_params"]
    assert bench["ratios"]["lora_dpo_state_vs_sft"] <= 1.1
