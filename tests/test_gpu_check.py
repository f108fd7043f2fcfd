"""scripts/gpu_check.py's steps, run on the CPU (`--cpu`): the GPU run is the same code with
CUDA, NCCL and bf16 weights under FSDP."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_gpu_check_runs_every_step_on_the_cpu():
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if ":" in line}
    assert {"generate", "train", "critics", "fsdp", "lora", "dpo-fsdp", "dpo-lora",
            "OK"} <= set(lines), done.stdout
    assert "one reference pass per round" in lines["dpo-lora"]
    assert "checkpoint generates" in lines["fsdp"] and "checkpoint generates" in lines["lora"]
    assert "81,920 trainable params" in lines["lora"]  # r=8 on 7 projections of 4 layers


def test_gpu_check_refuses_to_pass_without_cuda():
    env = os.environ | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "CUDA is not available" in done.stderr
