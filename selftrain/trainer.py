"""Each round's finetune, on a group of training workers that lives for the whole run.

Starting a worker group, a process group and a model costs seconds per round (Ray Train's
`TorchTrainer.fit()` paid ~10 s before training a ~100-row set in ~1 s), so the run starts its
trainer ranks once, as verl and OpenRLHF keep their actor groups: `TrainerGroup` places
`train.resources.num_workers` ranks with a placement group (multi-node as the other groups),
they join one torch process group (gloo on CPU, NCCL on GPU) and keep the policy in memory
between rounds. Each round, every rank reads `train.parquet`, starts from the base model or the
previous policy (`train.init`), trains its shard (DDP when there is more than one rank) and
rank 0 writes the checkpoint to a temporary name and renames it, so a crash never leaves a half
checkpoint that a resumed run could take for a finished one.

A rank that dies mid-finetune (its process killed, its node lost) takes the group down: the
group is started again and the round's finetune redone from its inputs, which gives the same
weights (same data, same shuffling seed, same starting weights). `train.max_failures` bounds
the retries. An exception in the training code is not retried: it is the user's to see.

On object storage every rank downloads the inputs its node lacks and rank 0 uploads the
checkpoint it wrote.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from selftrain.config import TrainConfig
from selftrain.groups import ActorGroup
from selftrain.sft import SFTExample, SFTSettings
from selftrain.storage import Storage


@dataclass
class FinetuneJob:
    """One round's finetune, as every rank receives it."""

    init_path: str
    """The weights to start from: the base model or the previous round's checkpoint."""
    train_path: str
    out_path: str
    settings: SFTSettings
    bf16: bool = False


def examples_from_rows(rows: list[dict[str, Any]]) -> list[SFTExample]:
    """Rows of train.parquet as read by pandas: `loss_mask` is None or an array of
    [start, end] arrays (so no truth test on it: numpy refuses one)."""
    return [
        SFTExample(prompt=r["prompt"], completion=r["completion"],
                   masked_spans=[(int(s[0]), int(s[1])) for s in
                                 (r.get("loss_mask") if r.get("loss_mask") is not None else [])])
        for r in rows
    ]


class TrainerWorker:
    """One rank: its process-group membership and the policy it trains, kept across rounds."""

    def __init__(self, world_size: int, num_cpus: float | None, storage: Storage) -> None:
        from selftrain.device import configure_threads

        configure_threads(num_cpus)
        self.rank, self.world_size, self.storage = 0, world_size, storage
        self.model: Any = None
        self.tokenizer: Any = None
        self.weights: str | None = None
        """Where the weights in memory came from (a model folder), None before the first."""

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "rank": self.rank,
                "node": ray.get_runtime_context().get_node_id()}

    def address(self) -> str:
        """tcp://host:port for the process group's rendezvous (asked of rank 0)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"tcp://{ray.util.get_node_ip_address()}:{port}"

    def join(self, init_method: str, backend: str, rank: int) -> None:
        """Become rank `rank` of the group's torch process group (once, for the run)."""
        import datetime

        import torch.distributed as dist

        self.rank = rank
        dist.init_process_group(backend, init_method=init_method, rank=rank,
                                world_size=self.world_size,
                                timeout=datetime.timedelta(minutes=30))

    def warm(self, path: str) -> None:
        """Load the policy at `path` ahead of the first finetune (while round 0 samples)."""
        from selftrain.device import best_device

        self.storage.ensure_local(path)
        self._load(path, best_device())

    def finetune(self, job: FinetuneJob) -> dict[str, Any]:
        """SFT on this rank's shard of the job's training set; rank 0 saves the result."""
        import pandas as pd
        import torch

        from selftrain.device import best_device
        from selftrain.sft import train_sft

        self.storage.ensure_local(job.init_path)  # on object storage: fetch what this node lacks
        self.storage.ensure_local(job.train_path)
        device = best_device()
        self._load(job.init_path, device)
        model = self.model
        if self.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(model)
        rows = pd.read_parquet(job.train_path).to_dict("records")
        stats = train_sft(model, self.tokenizer, examples_from_rows(rows), job.settings, device,
                          rank=self.rank, world_size=self.world_size,
                          autocast_dtype=torch.bfloat16 if job.bf16 else None)
        self.weights = job.out_path  # what is in memory now is what rank 0 saves
        if self.rank == 0:
            self._save(Path(job.out_path))
        return stats | {"rank": self.rank, "world_size": self.world_size, "examples": len(rows),
                        "node": ray.get_runtime_context().get_node_id()}

    def _load(self, path: str, device) -> None:
        """The weights at `path` into the model in memory; nothing to do when they are there
        already (`train.init: previous` continues from what this rank trained last round)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from selftrain.checkpoints import load_into

        if self.model is None:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        elif self.weights != path:
            load_into(self.model, path)
        self.weights = path

    def _save(self, out: Path) -> None:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        self.storage.delete(out)  # replace, not merge: no file of an earlier attempt stays
        self.storage.upload(out)


class TrainerGroup:
    """The run's training ranks, joined in one process group, restarted whole on a death."""

    def __init__(self, cfg: TrainConfig, storage: Storage, timeout_s: float = 120.0,
                 warm_with: str | None = None) -> None:
        self.cfg, self.storage, self.timeout_s = cfg, storage, timeout_s
        self.restarts = 0
        self.group = self._start()
        # Loading the model is started now and not waited for: it overlaps round 0.
        self._warming = [a.warm.remote(warm_with) for a in self.group.actors] if warm_with else []

    def _start(self) -> ActorGroup:
        res = self.cfg.resources
        group = ActorGroup("train", TrainerWorker, (res.num_workers, res.num_cpus, self.storage),
                           res, timeout_s=self.timeout_s, max_restarts=0)
        try:
            init = ray.get(group.actors[0].address.remote())
            backend = "nccl" if res.num_gpus else "gloo"
            ray.get([a.join.remote(init, backend, rank) for rank, a in enumerate(group.actors)])
        except BaseException:
            group.shutdown()
            raise
        return group

    def finetune(self, job: FinetuneJob) -> list[dict[str, Any]]:
        """Per-rank stats of the job, redone on a fresh group when a rank dies."""
        from ray.exceptions import RayActorError

        for attempt in range(self.cfg.max_failures + 1):
            try:
                return self._run(job)
            except RayActorError:
                if attempt == self.cfg.max_failures:
                    raise
                self.shutdown()
                self.restarts += 1
                self.group = self._start()
        raise AssertionError("unreachable")

    def _run(self, job: FinetuneJob) -> list[dict[str, Any]]:
        warming, self._warming = self._warming, []
        ray.get(warming)
        refs = [a.finetune.remote(job) for a in self.group.actors]
        pending = list(refs)
        while pending:  # the first failure ends the wait: other ranks may block in a collective
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done[0])
        return ray.get(refs)

    def info(self) -> list[dict[str, Any]]:
        return self.group.call_all("info")

    def shutdown(self) -> None:
        self.group.shutdown()


def finetune_job(cfg: TrainConfig, *, init_path: str, train_path: Path, out_path: Path,
                 seed: int) -> FinetuneJob:
    """The job of one round from the config's train section."""
    settings = SFTSettings(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                           warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                           max_length=cfg.max_length, seed=seed)
    return FinetuneJob(str(init_path), str(train_path), str(out_path), settings, cfg.bf16)

