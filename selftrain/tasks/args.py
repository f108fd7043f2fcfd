"""`task.args` checked against the task constructor's annotations before anything runs, so a
wrong value is named by its key (`task.args.levels must be a list, got 4`) instead of failing
inside the task (`'int' object is not iterable`)."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any

from selftrain.typed_yaml import ConfigError, _coerce

SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)


def check_task_args(cls: type, args: dict[str, Any], source: str) -> None:
    """Raise ConfigError naming `task.args.<name>` for an unknown argument or a value its
    annotation does not allow (ints, floats, bools, strings, sequences and unions of them;
    other annotations are left to the task)."""
    params = inspect.signature(cls.__init__).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: leave the checks to the task
        hints = {}
    for name, value in args.items():
        if name not in params and not open_ended:
            known = ", ".join(p for p in params if p != "self" and params[p].kind not in
                              (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD))
            raise ConfigError(f"{source}: key task.args.{name} is not an argument of the task "
                              f"(known: {known})")
        if name in hints:
            _check(hints[name], value, f"task.args.{name}", source)


def _check(hint: Any, value: Any, key: str, source: str) -> None:
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in inner if a is not type(None)]
        if value is None and len(options) < len(inner):
            return
        errors = []
        for option in options:
            try:
                return _check(option, value, key, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin in SEQUENCES or hint in SEQUENCES:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key {key} must be a list, got {value!r} "
                              f"({type(value).__name__})")
        for i, item in enumerate(value if inner else []):
            _check(inner[0], item, f"{key}[{i}]", source)
        return
    if hint in (int, float, bool, str) or origin in (dict, typing.Literal):
        _coerce(hint, value, key, source)
