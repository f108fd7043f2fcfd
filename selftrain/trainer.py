"""Each round's finetune: SFT on the round's training set, as a Ray Train `TorchTrainer` job.

The job reads `train.parquet` and writes the new policy as a `save_pretrained` folder, both on
the run's storage, so trainer workers and rollout workers on other nodes share them. Rank 0
writes the checkpoint to a temporary name and renames it, so a crash never leaves a half
checkpoint that a resumed run could take for a finished one.

When run_root is a URI (`selftrain.storage`), Ray Train keeps its run on the object store too,
each worker downloads the inputs its node lacks, and rank 0 uploads the checkpoint it wrote.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selftrain.config import TrainConfig
from selftrain.sft import SFTExample, SFTSettings, train_sft
from selftrain.storage import Storage


def examples_from_rows(rows: list[dict[str, Any]]) -> list[SFTExample]:
    """Rows of train.parquet as read by pandas: `loss_mask` is None or an array of
    [start, end] arrays (so no truth test on it: numpy refuses one)."""
    return [
        SFTExample(prompt=r["prompt"], completion=r["completion"],
                   masked_spans=[(int(s[0]), int(s[1])) for s in
                                 (r.get("loss_mask") if r.get("loss_mask") is not None else [])])
        for r in rows
    ]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs inside every Ray Train worker: load, wrap in DDP, SFT, rank 0 saves."""
    import pandas as pd
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selftrain.device import configure_threads

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_threads(config["num_cpus"])
    storage: Storage = config["storage"]
    storage.ensure_local(config["init_path"])  # on object storage: fetch what this node lacks
    storage.ensure_local(config["train_path"])
    device = ray.train.torch.get_device()
    tokenizer = AutoTokenizer.from_pretrained(config["init_path"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(config["init_path"], dtype=torch.float32)
    model = ray.train.torch.prepare_model(model)
    rows = pd.read_parquet(config["train_path"]).to_dict("records")
    settings = SFTSettings(**config["settings"])
    autocast = torch.bfloat16 if config["bf16"] else None
    stats = train_sft(model, tokenizer, examples_from_rows(rows), settings, device,
                      rank=rank, world_size=world, autocast_dtype=autocast)
    stats.update(rank=rank, world_size=world, node=ray.get_runtime_context().get_node_id(),
                 examples=len(rows))
    if rank == 0:
        out = Path(config["out_path"])
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = model.module if hasattr(model, "module") else model
        unwrapped.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        storage.delete(out)  # replace, not merge: no file of an earlier attempt stays
        storage.upload(out)
    stats_path = Path(config["stats_dir"]) / f"rank{rank}.json"
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats))
    storage.upload(stats_path)
    ray.train.report({"loss": stats["loss"], "steps": stats["steps"]})


def finetune(cfg: TrainConfig, *, train_path: Path, init_path: str, out_path: Path,
             storage_path: Path, name: str, seed: int, storage: Storage) -> dict[str, Any]:
    """SFT `init_path` on `train_path` with Ray Train; returns per-rank stats. The paths are
    local (on object storage, staging paths) and the checkpoint is also in the record."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    res = cfg.resources
    per_worker = {"CPU": res.num_cpus} | ({"GPU": res.num_gpus} if res.num_gpus else {})
    stats_dir = out_path.parent / "train_stats"
    shutil.rmtree(stats_dir, ignore_errors=True)
    fs, path = storage.trainer_location(storage_path)  # Ray Train keeps its run in the record
    shutil.rmtree(out_path, ignore_errors=True)  # an earlier attempt's copy on this node
    storage.delete(stats_dir)
    settings = SFTSettings(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                           warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                           max_length=cfg.max_length, seed=seed)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "init_path": str(init_path), "train_path": str(train_path), "out_path": str(out_path),
            "stats_dir": str(stats_dir), "settings": asdict(settings), "bf16": cfg.bf16,
            "num_cpus": res.num_cpus, "storage": storage,
        },
        torch_config=TorchConfig(backend="nccl" if res.num_gpus else "gloo"),
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.num_gpus > 0,
                                     resources_per_worker=per_worker,
                                     placement_strategy=res.placement_strategy),
        run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=1)),
    )
    trainer.fit()
    storage.ensure_local(out_path)  # rank 0 and the others may have run on other nodes
    storage.download(stats_dir)
    storage.delete(stats_dir)
    ranks = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("rank*.json"))]
    shutil.rmtree(stats_dir, ignore_errors=True)
    return {"ranks": ranks, "steps": ranks[0]["steps"] if ranks else 0,
            "loss": ranks[0]["loss"] if ranks else float("nan")}
