"""One rank's finetune of a round, and the policy it keeps between rounds (no Ray here).

`TrainerWorker` (selftrain/cluster/trainer.py) runs `RankTrainer` inside a Ray actor; scripts/gpu_check.py
runs it in-process on a one-rank process group. Either way the torch process group exists first.

What is in memory between rounds: after round k the model holds exactly the weights of round
k's checkpoint, in the layout training needs: whole on each rank (ddp) or sharded over the ranks
(fsdp), with LoRA layers around them under `train.lora` (rank 0 merges the adapter into the
weights it saves and broadcasts the merged weights back into the model). `weights` names that
checkpoint, so `train.init: previous` reads nothing, and `train.init: base` reads the base
model's files into the live (sharded) model. Under fsdp only rank 0 ever holds whole weights,
in CPU memory and only for a moment: when it reads a checkpoint (then broadcasts each rank its
shard) and when it writes one. The other ranks build the model on the meta device and never
read a weight file, so a node's host memory holds one whole copy of the model, not one per rank;
the device only ever holds shards and the layer being computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selftrain.config import DPOConfig, TrainConfig
from selftrain.train.objectives import make_objective
from selftrain.train.sft import SFTExample, SFTSettings


@dataclass
class FinetuneJob:
    """One round's finetune, as every rank receives it."""

    init_path: str
    """The weights to start from: the base model or the previous round's checkpoint."""
    train_path: str
    out_path: str
    settings: SFTSettings
    objective: str = "sft"
    """`train.objective`: what the round learns from `train_path` (selftrain/train/objectives.py)."""
    dpo: DPOConfig | None = None
    reference_path: str | None = None
    """dpo: the reference model's weights (None: `init_path`, the round's start)."""


def examples_from_rows(rows: list[dict[str, Any]]) -> list[SFTExample]:
    """Rows of train.parquet as read by pandas: `loss_mask` is None or an array of
    [start, end] arrays (so no truth test on it: numpy refuses one)."""
    return [
        SFTExample(prompt=r["prompt"], completion=r["completion"],
                   masked_spans=[(int(s[0]), int(s[1])) for s in
                                 (r.get("loss_mask") if r.get("loss_mask") is not None else [])])
        for r in rows
    ]


def check_setup(cfg: TrainConfig, model_path: str) -> None:
    """What `cfg` asks of the model that only the model can answer (LoRA targets exist, are
    linear and not tied; FSDP finds decoder layers), checked on a weightless copy (meta device,
    built from its config.json) so that a mistake is a `ConfigError` before Ray starts, not a
    failure of round 1's finetune after round 0's generation."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from selftrain.train.lora import add_adapters
    from selftrain.train.sharding import decoder_layers

    if cfg.lora is None and cfg.strategy != "fsdp":
        return
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
        if cfg.lora is not None:
            add_adapters(model, cfg.lora)
    if cfg.strategy == "fsdp":
        decoder_layers(model)


class SFTObjective:
    """`train.objective: sft`: the completions of the previous round's train.parquet."""

    data_file = "train.parquet"

    def train(self, trainer: RankTrainer, job: FinetuneJob) -> dict[str, Any]:
        import pandas as pd

        trainer.prepare(job.init_path, job.settings.seed)
        rows = pd.read_parquet(job.train_path).to_dict("records")
        return trainer.train(examples_from_rows(rows), job.settings) | {"examples": len(rows)}


class RankTrainer:
    """The policy on one rank of the training process group, and each round's finetune of it."""

    def __init__(self, cfg: TrainConfig, rank: int, world_size: int, device: torch.device) -> None:
        from selftrain.train.sharding import precision

        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        self.model: Any = None
        """The transformers model: sharded in place under fsdp, with LoRA layers under lora."""
        self.tokenizer: Any = None
        self.adapters: Any = None
        """`selftrain.train.lora.Adapters` under `train.lora`."""
        self.weights: str | None = None
        """The checkpoint whose weights the model holds; None when it holds none (mid-round)."""
        self.read_mib = 0.0
        """MiB of weight files this rank has read (reported per round: under fsdp, rank 0's)."""
        self.reference_passes = 0
        """Passes over a round's pairs with the reference model (dpo: one per round)."""
        self.load_seconds = 0.0
        """Seconds `prepare` spent bringing weights in during the current finetune."""
        self.precision, self.autocast = precision(cfg.strategy, cfg.bf16, device)

    def finetune(self, job: FinetuneJob) -> dict[str, Any]:
        """Train as the job's objective says (from `job.init_path`, on this rank's shard of its
        data), write the checkpoint (rank 0). Returns this rank's stats, with its peak memory."""
        from selftrain.device import peak_memory_mib, reset_peak_memory

        reset_peak_memory(self.device)
        read_before = self.read_mib
        self.load_seconds = 0.0
        start, cpu = time.perf_counter(), time.thread_time()
        stats = make_objective(job.objective).train(self, job)
        trained = time.perf_counter()
        examples = stats.pop("examples", None)  # where an SFT round's record always had it
        self.save(Path(job.out_path))
        # the rank's parts of the stage: weights read by `prepare`, the objective's loop, the save
        parts = {"weight_load": round(self.load_seconds, 4),
                 "compute": round(trained - start - self.load_seconds, 4),
                 "write": round(time.perf_counter() - trained, 4)}
        # the CPU seconds of this thread (training runs on it): against the parts' wall seconds,
        # what the rank computed and what it waited for (another process on its core, I/O)
        stats = stats | {"parts": parts, "cpu_seconds": round(time.thread_time() - cpu, 4)}
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return stats | peak_memory_mib(self.device) | {
            "examples": examples, "strategy": self.cfg.strategy, "precision": self.precision,
            "lora": self.adapters is not None, "trainable_params": trainable,
            "weights_read_mib": round(self.read_mib - read_before, 1)}

    def warm(self, init_path: str) -> None:
        """The model, and everything the first finetune would set up on first use: one update
        of a two-token row at learning rate 0 (autograd, AdamW and the schedule; an AdamW step
        at lr 0 leaves every weight as it was) and the state-dict helpers of the save; on the
        CPU also a forward and backward pass of a full batch (`batch_size` rows of `max_length`
        tokens, gradients then dropped), so the heap already holds a step's activations and the
        first finetune does not fault them in page by page (~29k faults on the demo's model).
        Done while round 0 samples, so round 1's finetune costs its training."""
        import torch.distributed.checkpoint.state_dict  # the save uses it

        from selftrain.train.optim import adamw_with_schedule, optimizer_step
        from selftrain.train.sharding import for_training

        self.prepare(init_path, seed=0)
        model = for_training(self.model, self.cfg.strategy, self.world_size)
        optim, sched = adamw_with_schedule(model, 0.0, 0.0, total_steps=1, warmup_ratio=0.0)
        ids = torch.tensor([[self.tokenizer.eos_token_id] * 2], device=self.device)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer_step(model, optim, sched)
        if self.device.type == "cpu":  # the heap grows to a full batch's size now, not in round 1
            length = min(self.cfg.max_length, getattr(self.model.config, "max_position_embeddings",
                                                      self.cfg.max_length))
            full = torch.full((self.cfg.batch_size, length), self.tokenizer.eos_token_id,
                              device=self.device)
            with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
                model(input_ids=full, labels=full).loss.backward()
            model.zero_grad(set_to_none=True)

    def prepare(self, init_path: str, seed: int) -> None:
        """The model holds the weights at `init_path` (read only when it does not already) and,
        under LoRA, a fresh adapter drawn from `seed`."""
        start = time.perf_counter()
        self._prepare(init_path, seed)
        self.load_seconds += time.perf_counter() - start

    def _prepare(self, init_path: str, seed: int) -> None:
        from selftrain.train.checkpoints import checkpoint_state, tied_names
        from selftrain.train.lora import fresh_adapter_state
        from selftrain.train.sharding import load_full_state

        if self.model is None:
            self._build(init_path)
        elif self.weights != init_path:
            self.weights = None  # until the copy is complete
            if self._reads_weights:
                names = self._plain_names()
                tied = {plain for plain, own in names.items() if own in tied_names(self.model)}
                self._count_read(init_path)
                state = checkpoint_state(init_path, set(names), tied, torch.float32)
                self._load_plain(state, from_rank0=self._sharded)
            else:  # rank 0 reads them and sends this rank its shard
                self._load_plain({}, from_rank0=True)
        if self.adapters is not None:
            shapes = {k: v.shape for k, v in self.model.state_dict().items()}
            load_full_state(self.model, fresh_adapter_state(self.adapters, shapes, seed))
        self.weights = init_path

    def train(self, examples: list[SFTExample], settings: SFTSettings) -> dict[str, Any]:
        """The SFT loop on this rank's shard of `examples` (every rank takes the same steps)."""
        from selftrain.train.sft import train_sft
        from selftrain.train.sharding import for_training

        self.weights = None  # from here the model departs from every checkpoint
        model = for_training(self.model, self.cfg.strategy, self.world_size)
        return train_sft(model, self.tokenizer, examples, settings, self.device, rank=self.rank,
                         world_size=self.world_size, autocast_dtype=self.autocast)

    def save(self, out: Path) -> None:
        """Rank 0 writes the plain (merged) weights to `out`, the adapter beside them; after it,
        the model holds exactly the checkpoint's weights. Every rank must call it."""
        from selftrain.train.checkpoints import write_checkpoint
        from selftrain.train.lora import merge
        from selftrain.train.sharding import full_state

        state = full_state(self.model)  # {} on ranks other than 0
        if self.rank == 0:
            adapter = None
            if self.adapters is not None:
                state, tensors = merge(state, self.adapters)
                adapter = (self.adapters.peft_model, tensors)
            write_checkpoint(out, self.model, self.tokenizer, state, adapter)
        if self.adapters is not None:  # the merged weights become the model's: what was saved
            self._load_plain(state, from_rank0=True)
        self.weights = str(out)

    def _build(self, path: str) -> None:
        """The model of the run, from the weights at `path`: activation checkpointing, LoRA
        layers and FSDP sharding as the config says, in that order (FSDP shards what is there)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from selftrain.train.lora import add_adapters
        from selftrain.train.sharding import (
            broadcast_buffers,
            checkpoint_activations,
            load_full_state,
            shard,
        )

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self._reads_weights:
            self._count_read(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        else:  # weightless: rank 0 sends this rank its shard once the model is sharded
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path),
                                                         dtype=torch.float32)
        if self.cfg.activation_checkpointing:
            checkpoint_activations(model)
        if self.cfg.lora is not None:
            self.adapters = add_adapters(model, self.cfg.lora)
        if self._sharded:
            whole = dict(model.state_dict()) if self.rank == 0 else {}
            shard(model, self.device, self.cfg.bf16)  # moves the shards to the device
            if self.rank > 0:
                model.to_empty(device=self.device)  # storage for this rank's shards only
            load_full_state(model, whole, from_rank0=True)
            broadcast_buffers(model)
            del whole
        elif self.cfg.strategy == "fsdp":
            shard(model, self.device, self.cfg.bf16)
        else:
            model.to(self.device)
        self.model = model

    @property
    def _sharded(self) -> bool:
        """FSDP over more than one rank: rank 0 alone reads weight files."""
        return self.cfg.strategy == "fsdp" and self.world_size > 1

    @property
    def _reads_weights(self) -> bool:
        return self.rank == 0 or not self._sharded

    def _count_read(self, path: str) -> None:
        """Count the weight files at `path` as read by this rank (`weights_read_mib`)."""
        self.read_mib += sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 2**20

    def _plain_names(self) -> dict[str, str]:
        """Checkpoint name -> the model's name, for every weight that is not an adapter's."""
        from selftrain.train.lora import is_adapter, plain_name

        return {plain_name(k): k for k in self.model.state_dict() if not is_adapter(k)}

    def _load_plain(self, state: dict[str, torch.Tensor], from_rank0: bool = False) -> None:
        """Checkpoint-named weights into the model (`from_rank0`: only rank 0 has them)."""
        from selftrain.train.sharding import load_full_state

        names = self._plain_names()
        load_full_state(self.model, {names[k]: v for k, v in state.items()}, from_rank0)
