"""The loop side of the benchmark: one rs arm's round 0 and round 1 through the real loop, and
what its round-1 stages used and where their seconds went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_raw import weights_file

from selftrain.heap import heap_info

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "countdown_compare.yaml"


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def demo_base_model() -> str:
    """The demo's base model (the shipped one, copied to the cache): every size's policy, since
    a task of another size has another cache key and would build a model of its own."""
    from selftrain.config import load_config
    from selftrain.models.source import resolve_model
    from selftrain.tasks import make_task

    cfg = load_config(CONFIG, [f"model.cache_dir={REPO / '.cache/selftrain/models'}"])
    return resolve_model(cfg, make_task(cfg.task.name, **cfg.task.args))


def bench_config(out: Path, per_level: int, tag: str):
    """The demo's config for an rs arm of one round at `per_level` pool queries per level; the
    test split scales with it (25 at the demo's 60), so evaluate has sizes to fit too."""
    from selftrain.config import load_config

    test = max(2, round(per_level * 25 / 60))
    return load_config(CONFIG, [
        "rounds=1", "arms={}", "arm.name=rs", "tracking.enabled=false", f"run_root={out}",
        f"experiment=bench-{tag}", "ray.num_cpus=4", f"model.path={demo_base_model()}",
        f"task.args={{seed: 0, levels: [2, 3, 4], train_per_level: {per_level}, "
        f"test_per_level: {test}}}"])


def loop_run(out: Path, per_level: int, tag: str) -> dict[str, Any]:
    """Round 0 and round 1 through the loop; round 1's stage records, the weights its stages
    used (the file the rollout worker held, the init the finetune recorded), the chunk seeds
    and sampling settings of its generate and evaluate, the workers' chunk clocks."""
    import pandas as pd

    from selftrain.backends import SamplingConfig
    from selftrain.loop.driver import run_rounds
    from selftrain.loop.run import open_run
    from selftrain.loop.stages import chunk_seed

    cfg = bench_config(out, per_level, tag)
    with open_run(cfg, "rs", overwrite=True) as run:
        run_rounds(run)
        worker = run.rollout.call_all("info")[0]
        rank = run.trainer.info()[0]
        clock = run.rollout.call_all("clock")[0]
        memory = {"rollout_worker": peak_rss_mib(worker["pid"]),  # while the workers live
                  "training_rank": peak_rss_mib(rank["pid"])}
        heaps = {"rollout_worker": worker, "training_rank": rank, "driver": heap_info()}
        stages = run.folder.manifest["rounds"]["1"]
        folder, task = run.folder.path, run.task
        pool, test = [q.prompt for q in run.pool], [q.prompt for q in run.test]
    policy, init = worker["weights"], stages["finetune"]["init_path"]
    K, n, per_chunk = cfg.rollout.num_samples, cfg.eval.num_samples, cfg.rollout.batch_size
    gen_seeds = [chunk_seed(cfg.seed, 1, "generate", 0, c)
                 for c in range(-(-len(pool) // max(1, per_chunk // K)))]
    eval_seeds = [chunk_seed(cfg.seed, "evaluate", c)
                  for c in range(-(-len(test) // max(1, per_chunk // n)))]
    samples = pd.read_parquet(folder / "round_1" / "samples.parquet")
    evals = pd.read_parquet(folder / "round_1" / "eval.parquet")
    rows = len(pd.read_parquet(folder / "round_0" / "train.parquet"))
    start = min(e["started"] for e in stages.values())
    end = max(e["started"] + e["seconds"] for e in stages.values())
    return {
        "cfg": cfg, "folder": folder, "stages": stages, "policy": policy, "init": init,
        "pool_prompts": pool, "test_prompts": test, "gen_seeds": gen_seeds,
        "eval_seeds": eval_seeds, "round_seconds": end - start,
        "gen_params": SamplingConfig(n=K, temperature=cfg.rollout.temperature,
                                     top_p=cfg.rollout.top_p,
                                     max_new_tokens=cfg.rollout.max_new_tokens, stop=task.stop),
        "eval_params": SamplingConfig(n=n, temperature=cfg.eval.temperature,
                                      top_p=cfg.rollout.top_p,
                                      max_new_tokens=cfg.rollout.max_new_tokens, stop=task.stop),
        "items": {"generate": len(samples), "filter": len(samples), "evaluate": len(evals),
                  "finetune": rows, "metrics": len(samples) + len(evals)},
        "generate_tokens": int(samples["num_tokens"].sum()),
        "worker_chunks": {"generate": [c for c in clock if c["weights"] == policy
                                       and c["seed"] in set(gen_seeds)],
                          "evaluate": [c for c in clock if c["weights"] == policy
                                       and c["seed"] in set(eval_seeds)]},
        "weights": {"generate": weights_file(policy), "finetune": weights_file(init)},
        "torch_threads": {"rollout_worker": worker["torch_threads"],
                          "training_rank": rank["torch_threads"]},
        "frozen_objects": {p: h["frozen_objects"] for p, h in heaps.items()},
        "malloc": {p: h["malloc"] for p, h in heaps.items()},
        "memory": memory,
    }


def stage_parts(loop: dict[str, Any]) -> dict[str, float]:
    """`time/<stage>/<part>` of round 1: the stage timer's parts, the worker side of its
    dispatch (weight load and compute of its chunks, or the rank's load, training and save),
    and what is left of the dispatch once those are taken out (dispatch, gather, building
    the records). With one worker or rank, as here, the worker seconds add up directly."""
    parts: dict[str, float] = {}
    for stage, entry in loop["stages"].items():
        own = dict(entry.get("parts", {}))
        worker: dict[str, float] = {}
        if stage in loop["worker_chunks"]:
            for c in loop["worker_chunks"][stage]:
                for key in ("weight_load", "compute"):
                    worker[key] = worker.get(key, 0.0) + c[key]
        elif stage == "finetune":
            worker = dict(entry["workers"][0].get("parts", {}))
        if "dispatch_compute" in own and worker:
            own["dispatch_gather"] = own.pop("dispatch_compute") - sum(worker.values())
        for key, seconds in (own | worker).items():
            parts[f"time/{stage}/{key}"] = seconds
        parts[f"time/{stage}/other"] = entry["seconds"] - sum(own.values()) - sum(worker.values())
    return parts
