"""Each round's finetune, on a group of training workers that lives for the whole run.

Starting a worker group, a process group and a model costs seconds per round (Ray Train's
`TorchTrainer.fit()` paid ~10 s before training a ~100-row set in ~1 s), so the run starts its
trainer ranks once, as verl and OpenRLHF keep their actor groups: `TrainerGroup` places
`train.resources.num_workers` ranks with a placement group (multi-node as the other groups),
they join one torch process group (gloo on CPU, NCCL on GPU) and keep the policy in memory
between rounds. Each round, every rank reads `train.parquet` (`pairs.parquet` under
`train.objective: dpo`), starts from the base model or the previous policy (`train.init`),
trains its shard of the data (`train.strategy`: DDP, or FSDP
with the model sharded too; `train.lora`: adapters only) and rank 0 writes the checkpoint to a
temporary name and renames it, so a crash never leaves a half checkpoint that a resumed run
could take for a finished one. What a rank does each round, and what it keeps in memory between
rounds, is `selftrain.train.rank_trainer.RankTrainer`; this module places and restarts the ranks.

A rank that dies mid-finetune (its process killed, its node lost) takes the group down: the
group is started again and the round's finetune redone from its inputs, which gives the same
weights (same data, same shuffling seed, same starting weights). `train.max_failures` bounds
the retries. An exception in the training code is not retried: it is the user's to see.

On object storage every rank downloads the inputs its node lacks and rank 0 uploads the
checkpoint it wrote.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import ray
import torch

from selftrain.cluster.groups import ActorGroup
from selftrain.config import TrainConfig
from selftrain.device import best_device, configure_threads
from selftrain.heap import heap_info, settle_heap
from selftrain.runfolder.storage import Storage
from selftrain.train.rank_trainer import FinetuneJob, RankTrainer, examples_from_rows
from selftrain.train.sft import SFTSettings

__all__ = ["FinetuneJob", "TrainerGroup", "TrainerWorker", "examples_from_rows", "finetune_job"]


class TrainerWorker:
    """One rank: its process-group membership and the policy it trains, kept across rounds."""

    def __init__(self, *, cfg: TrainConfig, storage: Storage) -> None:
        configure_threads(cfg.resources.num_cpus)
        self.cfg, self.storage = cfg, storage
        self.rank, self.world_size = 0, cfg.resources.num_workers
        self.policy: RankTrainer | None = None

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "rank": self.rank,
                "node": ray.get_runtime_context().get_node_id(),
                "torch_threads": torch.get_num_threads(), **heap_info()}

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
        self.policy = RankTrainer(self.cfg, rank, self.world_size, best_device())
        settle_heap()

    def warm(self, path: str) -> None:
        """Load the policy at `path` ahead of the first finetune (while round 0 samples)."""
        assert self.policy is not None, "join() the process group first"
        self.storage.ensure_local(path)
        self.policy.warm(path)
        settle_heap()  # the loaded policy stays for the run

    def finetune(self, job: FinetuneJob) -> dict[str, Any]:
        """The job's objective (SFT, DPO) on this rank's shard of its data; rank 0 saves the
        result."""
        assert self.policy is not None, "join() the process group first"
        self.storage.ensure_local(job.init_path)  # on object storage: fetch what this node lacks
        self.storage.ensure_local(job.train_path)
        if job.reference_path:  # dpo with `reference: base`
            self.storage.ensure_local(job.reference_path)
        stats = self.policy.finetune(job)
        if self.rank == 0:
            out = Path(job.out_path)
            self.storage.delete(out)  # replace, not merge: no file of an earlier attempt stays
            self.storage.upload(out)
        return stats | {"rank": self.rank, "world_size": self.world_size,
                        "node": ray.get_runtime_context().get_node_id()}


class TrainerGroup:
    """The run's training ranks, joined in one process group, restarted whole on a death."""

    def __init__(self, cfg: TrainConfig, storage: Storage, timeout_s: float = 120.0,
                 warm_with: str | None = None) -> None:
        self.cfg, self.storage, self.timeout_s = cfg, storage, timeout_s
        self.restarts = 0
        self.group = self._start()
        # Loading the model is started now and not waited for: it overlaps round 0.
        self._warming = [a.warm.remote(warm_with) for a in self.group.actors] if warm_with else []

    def rewarm(self, path: str) -> None:
        """Start over from the weights at `path`, as a fresh group would (the next run of a
        sequential compare taking these ranks over): each rank reloads them and redoes the
        warm-up update at learning rate 0, not waited for."""
        self.restarts = 0
        self._warming = [a.warm.remote(path) for a in self.group.actors]

    def _start(self) -> ActorGroup:
        res = self.cfg.resources
        group = ActorGroup("train", TrainerWorker, dict(cfg=self.cfg, storage=self.storage), res,
                           timeout_s=self.timeout_s, max_restarts=0)
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

    def wait_warm(self) -> None:
        """Wait for the ranks' start-up load (once per run): when round 0 is shorter than it,
        round 1's finetune waits here, and its record says so (part `warm_wait`)."""
        from ray.exceptions import RayActorError

        warming, self._warming = self._warming, []
        try:
            ray.get(warming)
        except RayActorError:  # a rank died loading: the finetune's attempt fails and restarts
            pass

    def _run(self, job: FinetuneJob) -> list[dict[str, Any]]:
        self.wait_warm()
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
                 seed: int, base: str | None = None) -> FinetuneJob:
    """The job of one round from the config's train section (`base`: the base model, which
    `train.dpo.reference: base` compares with)."""
    settings = SFTSettings(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                           warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                           max_length=cfg.max_length, seed=seed)
    reference = str(base) if cfg.dpo.reference == "base" and base is not None else None
    return FinetuneJob(str(init_path), str(train_path), str(out_path), settings,
                       objective=cfg.objective, dpo=cfg.dpo, reference_path=reference)

