"""A settled heap (selftrain/heap.py): generation stops faulting freed memory back in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from selftrain.models.shipped import SHIPPED

REPO = Path(__file__).resolve().parent.parent

# Four chunks of the demo's generate (8 prompts x 4 samples, 48 new tokens) with the shipped
# base model, on one thread: the page faults of the last two, after the process settled.
PROBE = """
import json, resource, sys
import torch
from selftrain.backends.base import SamplingConfig
from selftrain.backends.hf import HFBackend
from selftrain.heap import heap_info, settle_heap
torch.set_num_threads(1)
backend = HFBackend(sys.argv[1])
settle_heap()
params = SamplingConfig(n=4, temperature=1.0, top_p=1.0, max_new_tokens=48, stop=())
prompts = [f"Use 3 4 {n} to make {n + 7}." for n in range(8)]
faults = []
for chunk in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    backend.generate(prompts, params, seed=chunk)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults": faults, **heap_info()}))
"""


def _run(probe: str, *args: str, keep: str = "1") -> dict:
    """A probe in a fresh process on the shipped base model; its last line, parsed."""
    model = next(p for p in SHIPPED.iterdir() if (p / "model.safetensors").exists())
    env = dict(os.environ, SELFTRAIN_KEEP_FREED_MEMORY=keep, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", probe, str(model), *args], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_settled_worker_reuses_freed_memory_instead_of_faulting_it_back():
    kept, default = _run(PROBE, keep="1"), _run(PROBE, keep="0")
    assert (kept["malloc"], default["malloc"]) == ("kept", "default")
    assert kept["frozen_objects"] > 10_000
    # glibc's defaults hand the KV cache's copies back to the kernel and fault them in again,
    # every chunk; kept, the heap already holds them after the first chunks
    assert sum(default["faults"][2:]) > 1000, default
    assert sum(kept["faults"][2:]) < sum(default["faults"][2:]) / 10, (kept, default)


# A training rank (a world of one, gloo) warmed on the shipped model, then a round's finetune
# of 96 countdown rows: the page faults of that first finetune, and of a second one.
RANK_PROBE = """
import json, resource, sys
from pathlib import Path
import pandas as pd, torch, torch.distributed as dist
from selftrain.cluster.trainer import finetune_job
from selftrain.heap import settle_heap
from selftrain.train.rank_trainer import RankTrainer
from selftrain.train_config import TrainConfig
model, out = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
rows = [{"prompt": f"Use 3 4 {n} to make {n + 7}.", "completion": f" {n} + 4 + 3 = {n + 7}"}
        for n in range(96)]
pd.DataFrame(rows).to_parquet(out / "train.parquet")
dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=0, world_size=1)
cfg = TrainConfig(epochs=1, batch_size=32, max_length=64)
rank = RankTrainer(cfg, 0, 1, torch.device("cpu"))
rank.warm(model)
settle_heap()
faults = []
for k in range(2):
    job = finetune_job(cfg, init_path=model, train_path=out / "train.parquet",
                       out_path=out / f"ck{k}", seed=k)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rank.finetune(job)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
dist.destroy_process_group()
print(json.dumps({"faults": faults}))
"""


def test_a_warmed_rank_finetunes_in_the_memory_its_warm_made(tmp_path):
    faults = _run(RANK_PROBE, str(tmp_path))["faults"]
    # the warm's full batch grew the heap to a step's size: round 1 faults a few thousand pages
    # at most (reading its init, writing its checkpoint; 0.5-2.6k measured, under CI's load the
    # high end), not a step's activations page by page (26-29k without the full batch)
    assert faults[0] < 8000, faults
