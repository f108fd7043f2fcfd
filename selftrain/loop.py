"""The round driver: one process owns the loop and calls the named stages in order.

    round 0:  generate → critique → refine → filter → evaluate → metrics      (base policy)
    round k:  finetune(train set of round k-1) → generate → … → metrics      (policy k)

A task without difficulty levels (math without a level column) gets them from the base policy:
round 0 runs generate → evaluate → difficulty → critique → … so that every figure, round 0's
included, uses the levels saved in `round_0/difficulty.json`.

Every figure of round k describes one policy: the data it generates and its test accuracy.
Each stage's outputs are written atomically and recorded in `manifest.json`; a resumed run
reads finished stages back instead of redoing them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from transformers import AutoConfig, AutoTokenizer

from critics import Critique
from selftrain import stages
from selftrain.config import Config, dump_yaml
from selftrain.groups import ActorGroup
from selftrain.metrics_round import RoundFrames, example_rows, round_histograms, round_metrics
from selftrain.model_source import resolve_model
from selftrain.records import TRAIN_SCHEMA, read_critiques, read_samples
from selftrain.runfolder import (
    RunFolder,
    atomic_write_bytes,
    atomic_write_json,
    write_parquet,
    write_table,
)
from selftrain.storage import Storage, storage_for
from selftrain.tasks import Task, abilities, make_task
from selftrain.tracking import TABLE_KEYS, Tracker, console, level_keys, round_table
from selftrain.trainer import finetune
from selftrain.types import Query, Sample
from selftrain.workers import CriticWorker, RolloutWorker


def arm_dir(cfg: Config, arm: str) -> Path:
    """The arm's run folder: under run_root, or its staging copy when run_root is a URI."""
    return local_root(cfg) / cfg.experiment / arm / f"seed{cfg.seed}"


def local_root(cfg: Config) -> Path:
    storage = storage_for(cfg.run_root, cfg.staging_dir)
    return storage.local_root if storage else Path(cfg.run_root)


def worker_env() -> dict[str, str]:
    """Environment for every Ray worker of a run (the user's own settings win).

    Ray Train's controller polls its workers every 2 s by default, so each round's finetune
    waited up to 2 s at every step of the worker group's life; 0.2 s cut an empty
    `TorchTrainer.fit()` here from ~15 s to ~11 s (measured, 3 fits each).
    """
    defaults = {"TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    return {key: os.environ.get(key, value) for key, value in defaults.items()}


def start_ray(cfg: Config) -> None:
    """Connect to `ray.address` / RAY_ADDRESS, or start a local cluster with its temp dir in
    the run root. Workers get the driver's import path, so `critic.path` modules resolve."""
    if ray.is_initialized():
        return
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} | worker_env()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return
    temp = local_root(cfg).resolve() / ".ray"
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=cfg.ray.num_cpus, _temp_dir=str(temp), include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")


@dataclass
class Run:
    """What every round of one arm shares: config, task, workers, folder, tracker."""

    cfg: Config
    task: Task
    folder: RunFolder
    base: str
    rollout: ActorGroup
    critic: ActorGroup | None
    tracker: Tracker
    pool: list[Query]
    test: list[Query]
    tokenizer: Any
    """The policy's tokenizer (shared by every round's checkpoint): prompt lengths, token counts."""
    budget: dict[int, int] | None = None
    skipped: dict[str, int] | None = None
    """Queries whose prompt does not fit the model's context (skipped and counted)."""


class Round:
    """The stages of round k. Each one either reads its finished outputs back (the manifest
    says it is done: a resumed run) or runs, writes its files atomically and records itself."""

    def __init__(self, run: Run, k: int) -> None:
        self.run, self.k, self.cfg = run, k, run.cfg
        self.dir = run.folder.round_dir(k)
        self.times: dict[str, float] = {}
        self.by_id = {q.query_id: q for q in run.pool}

    def _done(self, stage: str) -> bool:
        if self.run.folder.is_done(self.k, stage):
            self.times[stage] = self.run.folder.stage_info(self.k, stage).get("seconds", 0.0)
            return True
        return False

    def _finish(self, stage: str, started: float, files: list[Path], **info: Any) -> None:
        self.times[stage] = round(time.time() - started, 3)
        self.run.folder.mark_done(self.k, stage, files, seconds=self.times[stage], **info)

    def finetune(self, policy: str) -> str:
        """SFT on the previous round's training set, from the base model or from `policy`."""
        ckpt = self.dir / "checkpoint"
        if not self._done("finetune"):
            t0 = time.time()
            init = self.run.base if self.cfg.train.init == "base" else policy
            stats = finetune(self.cfg.train, init_path=init, out_path=ckpt,
                             train_path=self.run.folder.round_dir(self.k - 1) / "train.parquet",
                             storage_path=self.run.folder.path / "ray_train",
                             name=f"round_{self.k}", seed=self.cfg.seed + self.k,
                             storage=self.run.folder.storage)
            self._finish("finetune", t0, [ckpt], init=self.cfg.train.init, loss=stats["loss"],
                         steps=stats["steps"], workers=stats["ranks"])
        return str(ckpt)

    def generate(self, policy: str) -> list[Sample]:
        """K first-pass samples per pool query (topped up to the token budget when matched)."""
        path = self.dir / "samples.parquet"
        if self._done("generate"):
            return read_samples(path, origin="sample")
        t0 = time.time()
        run, K = self.run, self.cfg.rollout.num_samples
        samples = stages.generate(self.cfg, run.task, run.rollout, run.pool, policy, self.k, K)
        if run.budget and self.k in run.budget:
            spent = sum(s.num_tokens for s in samples)
            extra = stages.extra_samples_for_budget(run.budget[self.k], spent, samples,
                                                    len(run.pool))
            if extra:
                samples += stages.generate(self.cfg, run.task, run.rollout, run.pool, policy,
                                           self.k, extra, first_index=K)
        write_parquet(path, [s.row() for s in samples])
        self._finish("generate", t0, [path], samples_per_query=len(samples) // len(run.pool))
        return samples

    def difficulty(self, samples: list[Sample]) -> list[Sample]:
        """Levels from the base policy's solve rates (round 0, tasks that ask for it).

        Pool rates from the first K samples per query (never a budget top-up, so every arm
        gets the same levels), test rates from eval.parquet, one quantile scale for both
        (`task.assign_difficulty`). The levels go to difficulty.json, into this round's
        samples and eval files, and into the run's pool and test queries.
        """
        run, path = self.run, self.dir / "difficulty.json"
        if self._done("difficulty"):
            levels = {q: int(v) for q, v in json.loads(path.read_text()).items()}
            run.task.set_difficulty(levels)
        else:
            t0 = time.time()
            K = self.cfg.rollout.num_samples
            hits: dict[str, list[bool]] = defaultdict(list)
            for s in samples:
                if s.origin == "sample" and int(s.sample_id.rsplit("-s", 1)[1]) < K:
                    hits[s.query_id].append(s.correct)
            evals = pq.read_table(self.dir / "eval.parquet").to_pandas()
            rates = {q: sum(v) / len(v) for q, v in hits.items()}
            rates |= evals.groupby("query_id")["correct"].mean().astype(float).to_dict()
            levels = run.task.assign_difficulty(rates)
            atomic_write_json(path, levels)
            files = [path]
            for name in ("samples.parquet", "eval.parquet"):
                files.append(_relevel(self.dir / name, levels))
            self._finish("difficulty", t0, files, levels=sorted(set(levels.values())))
        run.pool = [replace(q, difficulty=levels.get(q.query_id, q.difficulty)) for q in run.pool]
        run.test = [replace(q, difficulty=levels.get(q.query_id, q.difficulty)) for q in run.test]
        self.by_id = {q.query_id: q for q in run.pool}
        return [replace(s, difficulty=levels.get(s.query_id, s.difficulty)) for s in samples]

    def critique(self, samples: list[Sample]) -> dict[str, Critique]:
        """Step-level critiques of every first-pass sample."""
        path = self.dir / "critiques.parquet"
        if self._done("critique"):
            return read_critiques(path)
        t0 = time.time()
        found = stages.critique(self.run.critic, self.cfg.critic.batch_size,
                                stages.requests_for(samples, self.by_id), f"round {self.k} critique")
        write_parquet(path, [c.row() for c in found])
        self._finish("critique", t0, [path])
        return {c.sample_id: c for c in found}

    def refine(self, samples: list[Sample], critiques: dict[str, Critique],
               policy: str) -> tuple[list[Sample], dict[str, Critique]]:
        """Critique-guided repairs of the failed samples; samples/critiques files gain them."""
        samples_path, critiques_path = self.dir / "samples.parquet", self.dir / "critiques.parquet"
        if self._done("refine"):
            return read_samples(samples_path), read_critiques(critiques_path)
        t0 = time.time()
        failed = [(s, critiques[s.sample_id]) for s in samples if not s.correct]
        refinements, found = stages.refine(self.cfg, self.run.task, self.run.rollout,
                                           self.run.critic, self.by_id, failed, policy, self.k)
        samples = samples + refinements
        critiques = critiques | {c.sample_id: c for c in found}
        write_parquet(samples_path, [s.row() for s in samples])
        write_parquet(critiques_path, [critiques[s.sample_id].row() for s in samples])
        self._finish("refine", t0, [samples_path, critiques_path], refinements=len(refinements))
        return samples, critiques

    def filter(self, samples: list[Sample], critiques: dict[str, Critique]) -> None:
        """The arm's rule turns samples and refinements into train.parquet."""
        path = self.dir / "train.parquet"
        if self._done("filter"):
            return
        t0 = time.time()
        kept = stages.select_training_set(self.cfg, samples, critiques)
        tokens = _completion_tokens(self.run.tokenizer, kept)
        rows = [{"sample_id": s.sample_id, "query_id": s.query_id, "difficulty": s.difficulty,
                 "prompt": s.prompt, "completion": s.completion, "origin": s.origin,
                 "loss_mask": s.loss_mask, "completion_tokens": n} for s, n in zip(kept, tokens)]
        write_parquet(path, rows, schema=TRAIN_SCHEMA)
        self._finish("filter", t0, [path])

    def evaluate(self, policy: str) -> None:
        """n samples per test query into eval.parquet."""
        path = self.dir / "eval.parquet"
        if self._done("evaluate"):
            return
        t0 = time.time()
        rows = stages.evaluate(self.cfg, self.run.task, self.run.rollout, self.run.test, policy,
                               self.k)
        write_parquet(path, rows)
        self._finish("evaluate", t0, [path])

    def metrics(self, policy: str) -> dict[str, Any]:
        """Every METRICS.md figure, recomputed from this round's files; logged to wandb."""
        path = self.dir / "metrics.json"
        if self._done("metrics"):
            return json.loads(path.read_text())
        t0 = time.time()
        run, k = self.run, self.k
        per_query = run.folder.stage_info(k, "generate")["samples_per_query"]
        frames = RoundFrames.read(self.dir)
        metrics = round_metrics(self.cfg, run.task, frames, run.pool, run.test, per_query,
                                self.times, len(run.tokenizer))
        metrics["skipped_prompts"] = sum((run.skipped or {}).values())
        hists = round_histograms(run.task, frames, run.pool, per_query)
        examples = example_rows(frames, k)
        atomic_write_json(self.dir / "histograms.json", hists)
        atomic_write_json(self.dir / "examples.json", examples)
        atomic_write_json(path, metrics)
        self._finish("metrics", t0, [path, self.dir / "histograms.json",
                                     self.dir / "examples.json"])
        run.tracker.log(k, metrics)
        run.tracker.log_round_extras(k, hists, examples)
        if k > 0:
            run.tracker.log_model(f"policy-round-{k}", policy, k)
        return metrics


def run_arm(cfg: Config, arm: str, *, resume: bool = False, overwrite: bool = False,
            budget: dict[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """Run (or resume) one arm; returns the metrics of every round."""
    storage = storage_for(cfg.run_root, cfg.staging_dir)
    folder = _open_folder(arm_dir(cfg, arm), resume, overwrite, storage)
    groups: list[ActorGroup] = []
    tracker = None
    try:
        task = make_task(cfg.task.name, **cfg.task.args)
        base = str(resolve_model(cfg, task))
        atomic_write_bytes(folder.path / "config.yaml", dump_yaml(cfg).encode())
        folder.publish([folder.path / "config.yaml"])
        folder.set_meta(experiment=cfg.experiment, arm=arm, seed=cfg.seed, base_model=str(base))
        start_ray(cfg)
        rollout = ActorGroup(
            "rollout", RolloutWorker,
            (base, cfg.rollout.backend, _backend_args(cfg), cfg.rollout.resources.num_cpus,
             cfg.task.name, cfg.task.args, storage),
            cfg.rollout.resources, timeout_s=cfg.ray.schedule_timeout_s)
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
        if tracker.run_id and "wandb_id" not in folder.manifest:
            folder.set_meta(wandb_id=tracker.run_id)
            tracker.log_model("base-model", base, 0)
        tokenizer = AutoTokenizer.from_pretrained(base)
        context = int(getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", 1 << 30))
        pool, skipped_pool = _fitting(task.queries("train"), tokenizer, context, cfg)
        test, skipped_test = _fitting(task.queries("test"), tokenizer, context, cfg)
        run = Run(cfg, task, folder, base, rollout, critic, tracker, pool, test, tokenizer,
                  budget, {"pool": skipped_pool, "test": skipped_test})
        if skipped_pool or skipped_test:
            console.print(f"[yellow]skipped {skipped_pool} pool and {skipped_test} test queries "
                          f"whose prompt + {cfg.rollout.max_new_tokens} new tokens exceed the "
                          f"model's context of {context} tokens[/]")
            folder.set_meta(skipped_prompts={"pool": skipped_pool, "test": skipped_test})

        history: dict[int, dict[str, Any]] = {}
        policy = base
        for k in range(cfg.rounds + 1):
            rnd = Round(run, k)
            if k > 0:
                policy = rnd.finetune(policy)
            samples = rnd.generate(policy)
            if k == 0 and abilities(task).policy_levels is not None:
                rnd.evaluate(policy)
                samples = rnd.difficulty(samples)
            critiques: dict[str, Critique] = {}
            if critic is not None:
                critiques = rnd.critique(samples)
                samples, critiques = rnd.refine(samples, critiques, policy)
            rnd.filter(samples, critiques)
            rnd.evaluate(policy)
            history[k] = rnd.metrics(policy)
            console.print(round_table(f"{cfg.experiment} · {arm} · seed {cfg.seed}", history,
                                      TABLE_KEYS + level_keys(history[k])))
        tracker.finish()
        if (folder.path / "wandb").is_dir():
            folder.publish([folder.path / "wandb"])
        return history
    finally:
        if tracker is not None:
            tracker.finish()
        for g in groups:
            g.shutdown()
        folder.release_lock()


def _relevel(path: Path, levels: dict[str, int]) -> Path:
    """Rewrite the `difficulty` column of a round file from {query_id: level}, atomically."""
    table = pq.read_table(path)
    ids = table.column("query_id").to_pylist()
    old = table.column("difficulty").to_pylist()
    column = pa.array([levels.get(q, d) for q, d in zip(ids, old)], type=table.schema.field("difficulty").type)
    write_table(path, table.set_column(table.schema.get_field_index("difficulty"), "difficulty",
                                       column))
    return path


def _fitting(queries: list[Query], tokenizer, context: int,
             cfg: Config) -> tuple[list[Query], int]:
    """Queries whose prompt leaves room for `max_new_tokens`, and how many did not."""
    lengths = [len(ids) for ids in tokenizer([q.prompt for q in queries],
                                             add_special_tokens=False)["input_ids"]]
    keep = [q for q, n in zip(queries, lengths) if n + cfg.rollout.max_new_tokens <= context]
    return keep, len(queries) - len(keep)


def _open_folder(path: Path, resume: bool, overwrite: bool, storage: Storage | None) -> RunFolder:
    """The run folder, checked against resume/overwrite. On object storage the remote copy
    decides whether a run exists, and a resume first brings the staging copy level with it."""
    folder = RunFolder(path, storage)
    where = storage.uri_of(path) if storage else folder.path
    held = folder.manifest_path.exists() or bool(storage and storage.exists(folder.manifest_path))
    if held and not resume:
        if not overwrite:
            raise FileExistsError(
                f"run folder {where} already holds a run: pass --resume to continue it, "
                f"--overwrite to start over, or choose another experiment= / run_root=")
        shutil.rmtree(folder.path, ignore_errors=True)
        if storage is not None:
            storage.delete(path)
        folder = RunFolder(path, storage)
    if resume:
        folder.pull()
    if resume and not folder.manifest_path.exists():
        raise FileNotFoundError(f"--resume: {where} has no manifest.json to resume from")
    folder.acquire_lock()
    return folder


def _backend_args(cfg: Config) -> dict[str, Any]:
    r = cfg.rollout
    return {"dtype": r.dtype, "tensor_parallel_size": r.tensor_parallel_size,
            "gpu_memory_utilization": r.gpu_memory_utilization}


def _completion_tokens(tokenizer, kept: list[Sample]) -> list[int]:
    """Tokens trained on per row: the completion (minus masked spans) plus EOS."""
    texts = []
    for s in kept:
        text, pos = "", 0
        for start, end in sorted(s.loss_mask or []):
            text += s.completion[pos:start]
            pos = end
        texts.append(text + s.completion[pos:])
    if not texts:
        return []
    return [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
