"""Throughput and memory of the loop's compute against plain in-process baselines.

Generation: the same prompts through (a) a plain in-process `HFBackend.generate` and (b) the
loop's path: rollout-worker actors on Ray fed in seeded chunks (`stages.run_generation`).
Training: the same training set through (a) the plain in-process SFT loop and (b) the loop's
Ray Train `TorchTrainer` job. Reports tokens per second and peak resident memory.

    .venv/bin/python scripts/benchmark.py [--queries 240] [--samples 4] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import psutil
import ray
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from selftrain import stages
from selftrain.backends import SamplingConfig
from selftrain.backends.hf import HFBackend
from selftrain.config import ResourceConfig, TinyModelConfig, TrainConfig
from selftrain.groups import ActorGroup
from selftrain.runfolder import write_parquet
from selftrain.sft import SFTExample, SFTSettings, train_sft
from selftrain.tasks import make_task
from selftrain.tiny_model import ensure_tiny_model
from selftrain.trainer import finetune
from selftrain.workers import RolloutWorker


def rss_mib(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=240)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-rows", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    console = Console()

    task = make_task("countdown")
    model = str(ensure_tiny_model(task, TinyModelConfig(), Path(".cache/selftrain/models").resolve()))
    queries = task.queries("train")[: args.queries]
    prompts = [q.prompt for q in queries]
    params = SamplingConfig(n=args.samples, temperature=1.0, max_new_tokens=48)
    results: dict[str, dict] = {}

    # -- generation, plain in-process -----------------------------------------------------------
    torch.set_num_threads(1)  # the same single CPU a rollout worker gets
    backend = HFBackend(model)
    per_chunk = args.batch_size // args.samples
    t0, tokens = time.perf_counter(), 0
    for i in range(0, len(prompts), per_chunk):
        for outs in backend.generate(prompts[i : i + per_chunk], params, seed=i):
            tokens += sum(g.num_tokens for g in outs)
    dt = time.perf_counter() - t0
    results["generate/in-process"] = {"tokens": tokens, "seconds": dt, "tok_per_s": tokens / dt}

    # -- generation, through the loop (Ray actor group, seeded chunks) ---------------------------
    ray.init(num_cpus=4, _temp_dir=str(out / ".ray"), include_dashboard=False, log_to_driver=False)
    group = ActorGroup("rollout", RolloutWorker, (model, "hf", {}, 1.0),
                       ResourceConfig(num_workers=1, num_cpus=1))
    job = stages.GenJob(prompts, params)
    stages.run_generation(group, stages.GenJob(prompts[:4], params), model, args.batch_size,
                          ("warmup",), "warmup")
    t0 = time.perf_counter()
    gens = stages.run_generation(group, job, model, args.batch_size, (0, "bench"), "bench")
    dt = time.perf_counter() - t0
    tokens = sum(g.num_tokens for outs in gens for g in outs)
    actor_pid = group.call_all("info")[0]["pid"]
    results["generate/ray-actors"] = {"tokens": tokens, "seconds": dt, "tok_per_s": tokens / dt,
                                      "peak_rss_mib": rss_mib(actor_pid)}
    group.shutdown()

    # -- training data: correct-looking completions from the solver ------------------------------
    rows = []
    for q in task.queries("train"):
        for sol in task.reference_solutions(q, k=4):
            rows.append({"prompt": q.prompt, "completion": sol, "loss_mask": None})
    rows = rows[: args.train_rows]
    train_path = out / "train.parquet"
    write_parquet(train_path, rows)

    # -- training, plain in-process ---------------------------------------------------------------
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model)
    settings = SFTSettings(epochs=args.epochs, lr=1e-3, batch_size=32)
    t0 = time.perf_counter()
    stats = train_sft(net, tok, [SFTExample(r["prompt"], r["completion"]) for r in rows], settings,
                      torch.device("cpu"))
    dt = time.perf_counter() - t0
    results["train/in-process"] = {"tokens": stats["tokens"], "seconds": dt,
                                   "tok_per_s": stats["tokens"] / dt}

    # -- training, through the loop (Ray Train TorchTrainer, 1 worker) ---------------------------
    cfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=32,
                      resources=ResourceConfig(num_workers=1, num_cpus=1))
    t0 = time.perf_counter()
    stats = finetune(cfg, train_path=train_path, init_path=model, out_path=out / "ckpt",
                     storage_path=out / "ray_train", name="bench", seed=0)
    dt = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in stats["ranks"])
    results["train/ray-train"] = {"tokens": tokens, "seconds": dt, "tok_per_s": tokens / dt,
                                  "note": "wall time includes Ray Train worker-group start-up"}
    results["driver"] = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    ray.shutdown()

    table = Table(title="selftrain benchmark (countdown, tiny model, CPU)")
    for col in ("path", "tokens", "seconds", "tokens/s", "peak RSS MiB"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(name, str(r.get("tokens", "")), f"{r.get('seconds', 0):.1f}",
                      f"{r.get('tok_per_s', 0):.0f}", f"{r.get('peak_rss_mib', float('nan')):.0f}")
    console.print(table)
    (out / "benchmark.json").write_text(json.dumps(results, indent=2))
    console.print(f"written {out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
