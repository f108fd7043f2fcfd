"""The `train` section of the config (each round's finetune and the training ranks that run
it) and the resources every worker group asks for, apart from the run's other sections in
`selftrain.config`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selftrain.typed_yaml import ConfigError

PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]

@dataclass
class ResourceConfig:
    """Resources of one Ray actor group."""

    num_workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    placement_strategy: PlacementStrategy = "PACK"
    """Ray placement-group strategy for the group: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""


@dataclass
class LoraConfig:
    """LoRA adapters (peft) on the policy's linear layers; see selftrain/train/lora.py."""

    r: int = 16
    alpha: float = 32.0
    """Scale of the adapter's update: alpha / r."""
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Names (last part) of the linear layers that get adapters; Llama/Qwen/Mistral names."""


@dataclass
class DPOConfig:
    """`train.objective: dpo`: the preference loss and the pairs the arm builds (selftrain/train/dpo.py,
    selftrain/arms/pairs.py)."""

    beta: float = 0.1
    """How far the policy may move from the reference: the scale of the implicit reward."""
    nll_weight: float = 0.0
    """Weight of the chosen side's negative log-likelihood per token (Iterative RPO: 1.0)."""
    reference: Literal["round_start", "base"] = "round_start"
    """The reference model: the weights the round's finetune starts from, or the base model."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    pairs_per_query: int = 4
    """At most this many pairs per query and round."""
    step_pairs: Literal["first_step", "continuation"] = "continuation"
    """Step pairs (critique arm): the repair's and the original's whole continuations from the
    wrong step, or only their first step (Step-DPO)."""
    score_margin: float = 0.1
    """Graded tasks: a pair's chosen side scores at least this much above its rejected side
    (scores in [0, 1]; equal scores never pair). 0.1 separates lexicon_lines' lines that differ
    by one constraint (1/10 of the score at 3 words) and ignores a reward model's near-ties."""


@dataclass
class TrainConfig:
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    init: Literal["base", "previous"] = "base"
    """Where each round's finetune starts: "base" (ReST-EM) or "previous" (STaR-continued)."""
    max_length: int = 256
    """Tokens of prompt + completion a training row keeps."""
    bf16: bool = False
    """bf16 compute: under fsdp on a GPU with bf16, the gathered weights are bf16 (the shards,
    gradient reduction and AdamW stay fp32); otherwise (ddp, or fsdp on the CPU) bf16 autocast
    over fp32 weights. Checkpoints are fp32 either way."""
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    keep_checkpoints: bool = True
    """False keeps only the newest round's checkpoint: a round's checkpoint is deleted once the
    next round's finetune is recorded (the manifest marks it pruned; `verify` skips it)."""
    max_failures: int = 1
    """A training rank that dies mid-finetune restarts the group and redoes the round's
    finetune, at most this many times per round."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """How the ranks share the policy: "ddp" (each rank holds all weights, gradients and
    optimizer state) or "fsdp" (FSDP2: each rank holds a 1/num_workers shard of them; each
    decoder layer is gathered only while it computes)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them:
    less memory for about a third more compute."""
    lora: LoraConfig | None = None
    """Train LoRA adapters only (None: all weights), with ddp or fsdp. Each round trains a fresh
    adapter (drawn from the round's seed) on the weights it starts from (`init`: the base model,
    or the previous round's merged policy); its checkpoint is the merged model, which every
    backend loads as plain weights, with the adapter beside it in checkpoint/adapter/."""
    objective: str = "sft"
    """What each round's finetune learns (a registry name, selftrain/train/objectives.py): "sft" (the
    previous round's train.parquet) or "dpo" (its pairs.parquet, `train.dpo`)."""
    dpo: DPOConfig = field(default_factory=DPOConfig)


def validate_train(train: TrainConfig, source: str) -> None:
    """The finetune's combinations that cannot run, caught before Ray starts."""
    res = train.resources
    if res.num_workers > 1 and 0 < res.num_gpus < 1:
        raise ConfigError(
            f"{source}: key train.resources.num_gpus is {res.num_gpus} with {res.num_workers} "
            f"workers: ranks could share a GPU, which NCCL refuses. Give each rank a whole GPU "
            f"(num_gpus: 1), or train on one worker.")
    validate_dpo(train, source)
    lora = train.lora
    if lora is None:
        return
    if lora.r < 1 or lora.alpha <= 0:
        raise ConfigError(f"{source}: keys train.lora.r and train.lora.alpha must be positive, got "
                          f"r={lora.r}, alpha={lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"{source}: key train.lora.dropout must lie in [0, 1), got "
                          f"{lora.dropout}")
    if not lora.target_modules:
        raise ConfigError(f"{source}: key train.lora.target_modules is empty: name the linear "
                          f"layers that get adapters, e.g. [q_proj, v_proj]")


def validate_dpo(train: TrainConfig, source: str) -> None:
    """The DPO numbers make sense (the objective's name is its registry's to check, in
    `selftrain.loop.checks`)."""
    dpo = train.dpo
    if not 0.0 <= dpo.score_margin <= 1.0:
        raise ConfigError(f"{source}: key train.dpo.score_margin must lie in [0, 1] (scores are "
                          f"in [0, 1]), got {dpo.score_margin}")
    if dpo.beta <= 0 or dpo.nll_weight < 0 or dpo.pairs_per_query < 1:
        raise ConfigError(f"{source}: keys train.dpo.beta must be > 0, train.dpo.nll_weight >= 0 "
                          f"and train.dpo.pairs_per_query >= 1; got beta={dpo.beta}, "
                          f"nll_weight={dpo.nll_weight}, pairs_per_query={dpo.pairs_per_query}")
