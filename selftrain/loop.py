"""The round driver: one process owns the loop and calls the named stages in order.

    round 0:  generate → critique → refine → filter → evaluate → metrics      (base policy)
    round k:  finetune(train set of round k-1) → generate → … → metrics      (policy k)

Every figure of round k describes one policy: the data it generates and its test accuracy.
Each stage's outputs are written atomically and recorded in `manifest.json`; a resumed run
reads finished stages back instead of redoing them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from transformers import AutoTokenizer

from critics import Critique, StepVerdict
from selftrain import stages
from selftrain.config import Config, dump_yaml
from selftrain.groups import ActorGroup
from selftrain.metrics_round import round_metrics
from selftrain.model_source import resolve_model
from selftrain.runfolder import RunFolder, atomic_write_bytes, atomic_write_json, write_parquet
from selftrain.tasks import make_task
from selftrain.tracking import TABLE_KEYS, Tracker, console, level_keys, round_table
from selftrain.trainer import finetune
from selftrain.types import Sample
from selftrain.workers import CriticWorker, RolloutWorker


def arm_dir(cfg: Config, arm: str) -> Path:
    return Path(cfg.run_root) / cfg.experiment / arm / f"seed{cfg.seed}"


def start_ray(cfg: Config) -> None:
    """Connect to `ray.address` / RAY_ADDRESS, or start a local cluster with its temp dir in
    the run root. Workers get the driver's import path, so `critic.path` modules resolve."""
    if ray.is_initialized():
        return
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TOKENIZERS_PARALLELISM": "false"}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return
    temp = Path(cfg.run_root).resolve() / ".ray"
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=cfg.ray.num_cpus, _temp_dir=str(temp), include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")


class Round:
    """Bookkeeping of one round: stage timing, manifest, and where files go."""

    def __init__(self, folder: RunFolder, k: int) -> None:
        self.folder, self.k = folder, k
        self.dir = folder.round_dir(k)
        self.times: dict[str, float] = {}

    def done(self, stage: str) -> bool:
        if self.folder.is_done(self.k, stage):
            self.times[stage] = self.folder.stage_info(self.k, stage).get("seconds", 0.0)
            return True
        return False

    def finish(self, stage: str, started: float, files: list[Path], **info: Any) -> None:
        self.times[stage] = round(time.time() - started, 3)
        self.folder.mark_done(self.k, stage, files, seconds=self.times[stage], **info)


def run_arm(cfg: Config, arm: str, *, resume: bool = False, overwrite: bool = False,
            budget: dict[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """Run (or resume) one arm; returns the metrics of every round."""
    folder = RunFolder(arm_dir(cfg, arm))
    if folder.manifest_path.exists() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"run folder {folder.path} already holds a run: pass --resume to continue it, "
                f"--overwrite to start over, or choose another experiment= / run_root=")
        shutil.rmtree(folder.path)
        folder = RunFolder(folder.path)
    folder.acquire_lock()
    groups: list[ActorGroup] = []
    tracker = None
    try:
        task = make_task(cfg.task.name, **cfg.task.args)
        base = resolve_model(cfg, task)
        atomic_write_bytes(folder.path / "config.yaml", dump_yaml(cfg).encode())
        folder.set_meta(experiment=cfg.experiment, arm=arm, seed=cfg.seed, base_model=str(base))
        start_ray(cfg)
        res = cfg.rollout.resources
        rollout = ActorGroup(
            "rollout", RolloutWorker,
            (str(base), cfg.rollout.backend, _backend_args(cfg), res.num_cpus, cfg.task.name,
             cfg.task.args), res,
            timeout_s=cfg.ray.schedule_timeout_s)
        groups.append(rollout)
        critic = None
        if cfg.arm.name == "critique":
            critic = ActorGroup(
                "critic", CriticWorker,
                (cfg.critic.name, cfg.critic.path, cfg.critic.args, cfg.task.name, cfg.task.args,
                 cfg.critic.resources.num_cpus),
                cfg.critic.resources, timeout_s=cfg.ray.schedule_timeout_s)
            groups.append(critic)
        tracker = Tracker(cfg, folder.path, arm, resume_id=folder.manifest.get("wandb_id"))
        if tracker.run_id:
            folder.set_meta(wandb_id=tracker.run_id)
        pool, test = task.queries("train"), task.queries("test")
        vocab_size = len(AutoTokenizer.from_pretrained(str(base)))
        by_id = {q.query_id: q for q in pool}
        history: dict[int, dict[str, Any]] = {}
        policy = str(base)
        for k in range(cfg.rounds + 1):
            rnd = Round(folder, k)

            if k > 0:  # finetune on the previous round's training set
                ckpt = rnd.dir / "checkpoint"
                if not rnd.done("finetune"):
                    t0 = time.time()
                    init = str(base) if cfg.train.init == "base" else policy
                    stats = finetune(cfg.train, train_path=folder.round_dir(k - 1) / "train.parquet",
                                     init_path=init, out_path=ckpt,
                                     storage_path=folder.path / "ray_train", name=f"round_{k}",
                                     seed=cfg.seed + k)
                    rnd.finish("finetune", t0, [ckpt], init=cfg.train.init, loss=stats["loss"],
                               steps=stats["steps"], workers=stats["ranks"])
                policy = str(ckpt)

            samples_path, critiques_path = rnd.dir / "samples.parquet", rnd.dir / "critiques.parquet"
            if rnd.done("generate"):
                samples = _read_samples(samples_path, origin="sample")
            else:
                t0 = time.time()
                samples = stages.generate(cfg, task, rollout, pool, policy, k, cfg.rollout.num_samples)
                if budget and k in budget:  # budget-matched arm: top up to the target tokens
                    spent = sum(s.num_tokens for s in samples)
                    extra = stages.extra_samples_for_budget(budget[k], spent, samples, len(pool))
                    if extra:
                        samples += stages.generate(cfg, task, rollout, pool, policy, k, extra,
                                                   first_index=cfg.rollout.num_samples)
                write_parquet(samples_path, [s.row() for s in samples])
                rnd.finish("generate", t0, [samples_path],
                           samples_per_query=len(samples) // max(1, len(pool)))
            samples_per_query = folder.stage_info(k, "generate")["samples_per_query"]

            critiques: dict[str, Critique] = {}
            if critic is not None:
                if rnd.done("critique"):
                    critiques = _read_critiques(critiques_path)
                else:
                    t0 = time.time()
                    found = stages.critique(critic, cfg.critic.batch_size,
                                            stages.requests_for(samples, by_id), f"round {k} critique")
                    critiques = {c.sample_id: c for c in found}
                    write_parquet(critiques_path, [c.row() for c in found])
                    rnd.finish("critique", t0, [critiques_path])
                if rnd.done("refine"):
                    samples = _read_samples(samples_path)
                    critiques = _read_critiques(critiques_path)
                else:
                    t0 = time.time()
                    failed = [(s, critiques[s.sample_id]) for s in samples if not s.correct]
                    refinements, found = stages.refine(cfg, task, rollout, critic, by_id, failed,
                                                       policy, k)
                    critiques.update({c.sample_id: c for c in found})
                    samples = samples + refinements
                    write_parquet(samples_path, [s.row() for s in samples])
                    write_parquet(critiques_path, [critiques[s.sample_id].row() for s in samples
                                                   if s.sample_id in critiques])
                    rnd.finish("refine", t0, [samples_path, critiques_path],
                               refinements=len(refinements))

            train_path = rnd.dir / "train.parquet"
            if not rnd.done("filter"):
                t0 = time.time()
                kept = stages.select_training_set(cfg, samples, critiques)
                tokens = _completion_tokens(rollout, kept)
                rows = [{"sample_id": s.sample_id, "query_id": s.query_id,
                         "difficulty": s.difficulty, "prompt": s.prompt, "completion": s.completion,
                         "origin": s.origin, "loss_mask": s.loss_mask, "completion_tokens": n}
                        for s, n in zip(kept, tokens)]
                write_parquet(train_path, rows, schema=_TRAIN_SCHEMA)
                rnd.finish("filter", t0, [train_path])

            eval_path = rnd.dir / "eval.parquet"
            if not rnd.done("evaluate"):
                t0 = time.time()
                rows = stages.evaluate(cfg, task, rollout, test, policy, k)
                write_parquet(eval_path, rows)
                rnd.finish("evaluate", t0, [eval_path])

            metrics_path = rnd.dir / "metrics.json"
            if rnd.done("metrics"):
                metrics = pd.read_json(metrics_path, typ="series").to_dict()
            else:
                t0 = time.time()
                metrics = round_metrics(cfg, task, rnd.dir, pool, samples_per_query,
                                        rnd.times, vocab_size)
                atomic_write_json(metrics_path, metrics)
                rnd.finish("metrics", t0, [metrics_path])
                tracker.log(k, metrics)
            history[k] = metrics
            console.print(round_table(f"{cfg.experiment} · {arm} · seed {cfg.seed}", history,
                                      TABLE_KEYS + level_keys(metrics)))
        return history
    finally:
        if tracker is not None:
            tracker.finish()
        for g in groups:
            g.shutdown()
        folder.release_lock()


def _backend_args(cfg: Config) -> dict[str, Any]:
    r = cfg.rollout
    return {"dtype": r.dtype, "tensor_parallel_size": r.tensor_parallel_size,
            "gpu_memory_utilization": r.gpu_memory_utilization}


def _completion_tokens(rollout: ActorGroup, kept: list[Sample]) -> list[int]:
    """Tokens trained on per row: the completion (minus masked spans) plus EOS."""
    if not kept:
        return []
    texts = []
    for s in kept:
        text, pos = "", 0
        for start, end in sorted(s.loss_mask or []):
            text += s.completion[pos:start]
            pos = end
        texts.append(text + s.completion[pos:])
    counts = ray.get(rollout.actors[0].count_tokens.remote(texts))
    return [c + 1 for c in counts]


import pyarrow as pa  # noqa: E402

_TRAIN_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("query_id", pa.string()), ("difficulty", pa.int64()),
    ("prompt", pa.string()), ("completion", pa.string()), ("origin", pa.string()),
    ("loss_mask", pa.list_(pa.list_(pa.int64()))), ("completion_tokens", pa.int64()),
])


def _read_samples(path: Path, origin: str | None = None) -> list[Sample]:
    df = pd.read_parquet(path)
    if origin is not None:
        df = df[df["origin"] == origin]
    out = []
    for r in df.to_dict("records"):
        r["steps"] = list(r["steps"])
        r["loss_mask"] = [list(x) for x in r["loss_mask"]] if r.get("loss_mask") is not None else None
        r["parent_id"] = r["parent_id"] if isinstance(r["parent_id"], str) else None
        r["answer"] = r["answer"] if isinstance(r["answer"], str) else None
        out.append(Sample(**r))
    return out


def _read_critiques(path: Path) -> dict[str, Critique]:
    out = {}
    for r in pd.read_parquet(path).to_dict("records"):
        verdicts = [StepVerdict(ok=None if unk else bool(ok), score=float(sc), feedback=fb)
                    for ok, unk, sc, fb in zip(r["step_ok"], r["step_unknown"], r["step_score"],
                                               r["step_feedback"])]
        out[r["sample_id"]] = Critique(sample_id=r["sample_id"], critic=r["critic"],
                                       verdicts=verdicts, raw_text=r["raw_text"],
                                       tokens=int(r["critic_tokens"]))
    return out
