"""YAML into typed dataclasses: unknown keys, wrong types and values outside a `Literal` stop
with an error naming the key and the file (`ConfigError`); `key=value` overrides are parsed
as YAML. Nothing here knows selftrain's sections: `selftrain.config` declares them.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem a person can fix: says which key, which file, and what was expected."""


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file; a syntax error is one line with file, line and
    column (PyYAML's own message spans several)."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def parse_override(item: str, source: str = "command line") -> tuple[str, Any]:
    """`rollout.num_samples=8` -> ("rollout.num_samples", 8); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"{source}: override {item!r}: expected key=value, e.g. rounds=2")
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


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def checked_section(section: Any, key: str, source: str) -> Any:
    """A copy of a config section built in Python (e.g. `CriticTrainConfig(...)`), checked as
    the loader checks it in a YAML file: types and choices, errors naming `key.<field>`."""
    return build(type(section), to_dict(section), f"{key}.", source)


def build(cls: type, raw: Any, prefix: str, source: str) -> Any:
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
        return build(hint, value if value is not None else {}, key + ".", source)
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
