"""Where the base policy comes from: a named HF model (path or hub id) or the embedded tiny one."""

from __future__ import annotations

from pathlib import Path

from selftrain.config import Config, ConfigError
from selftrain.models.tiny_model import ensure_tiny_model
from selftrain.tasks import Task, abilities


def resolve_model(cfg: Config, task: Task) -> str:
    """A path or hub id `from_pretrained` can load; builds the tiny model when none is named."""
    if cfg.model.path is None:
        embedded = abilities(task).embedded_model
        if embedded is None:
            raise ConfigError(
                f"task {task.name!r} has no embedded base model: set model.path to a HF model")
        return str(ensure_tiny_model(embedded, cfg.model.tiny, Path(cfg.model.cache_dir).resolve()))
    return check_named_model(cfg.model.path)


def check_named_model(name: str) -> str:
    """A local HF model folder (with config.json) or a resolvable hub id, else ConfigError."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.path {path} is not a Hugging Face model folder "
                              f"(no config.json)")
        check_model_folder(path)
        return str(path)
    check_hub_model(name)
    return name


WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json",
           "pytorch_model.bin.index.json")


def check_model_folder(path: Path) -> None:
    """A local model folder holds weights and a tokenizer that loads: caught here, before Ray
    starts, not by every worker after it."""
    from transformers import AutoTokenizer

    if not any(next(path.glob(pattern), None) for pattern in WEIGHTS):
        raise ConfigError(f"model.path {path} holds no weights (no *.safetensors or "
                          f"pytorch_model*.bin): copy the whole model folder")
    try:
        AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # the message is for a person
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"model.path {path}: its tokenizer does not load ({first}): copy "
                          f"the tokenizer files (tokenizer.json or its vocabulary) too") from None


def check_hub_model(name: str) -> None:
    """Fail early, before Ray starts, when a hub id cannot be resolved (offline, typo)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except Exception as err:  # the message is for a person
        raise ConfigError(
            f"model.path {name!r} is neither a local folder nor a loadable hub model: {err}"
        ) from err
