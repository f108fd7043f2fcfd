"""Where critics are found: the built-ins, `module:Class` paths, registered classes and entry points.

The built-ins are listed as `"module:Class"` strings and imported only when built (as
skyrl-gym registers environments), so listing critic names imports no critic module and no
torch, and no critic module needs this one to register itself. A critic class is constructed
with the task (so it can read query metadata) and the config's `critic.args` as keyword
arguments: `Critic(task=task, **args)`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any

from critics.protocol import Critic

ENTRY_POINT_GROUP = "selftrain.critics"

BUILTIN_CRITICS: dict[str, str] = {
    "code-exec": "critics.code_exec:CodeExecCritic",
    "code-oracle": "critics.code_oracle:CodeOracle",
    "countdown-oracle": "critics.countdown_oracle:CountdownOracle",
    "lm": "critics.lm:LMCritic",
    "multihop-oracle": "critics.multihop_oracle:MultihopOracle",
    "noisy": "critics.noisy:NoisyCritic",
    "openai": "critics.served:OpenAICritic",
    "prm": "critics.prm:PRMCritic",
    "search-grounded": "critics.search_grounded:SearchGrounded",
    "search-judge": "critics.search_judge:SearchJudge",
}
"""Name -> import path of the critics shipped in this package."""

_REGISTRY: dict[str, Callable[..., Critic]] = {}


class CriticLoadError(ValueError):
    """A critic could not be found, imported or built; the message lists the known critics."""


def register_critic(name: str) -> Callable[[type], type]:
    """Class decorator: make a critic available as `critic.name: <name>` (it wins over a
    built-in of the same name)."""

    def wrap(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return wrap


def known_critics() -> list[str]:
    """Every name `critic.name` accepts: built-ins, registered classes, entry points."""
    names = set(BUILTIN_CRITICS) | set(_REGISTRY)
    names.update(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def resolve_critic(name: str | None = None, path: str | None = None) -> Callable[..., Critic]:
    """The critic factory named by `path` (`module:Class`) or `name` (registered class,
    built-in, entry point, in that order)."""
    if path:
        module_name, _, attr = path.partition(":")
        if not attr:
            raise CriticLoadError(f"critic.path {path!r} must look like 'my_pkg.my_module:MyCritic'")
        return _import(module_name, attr, f"critic.path {path!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN_CRITICS:
        module_name, _, attr = BUILTIN_CRITICS[name].partition(":")
        return _import(module_name, attr, f"critic {name!r}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as err:  # any import failure is the user's to see
                raise CriticLoadError(f"critic entry point {name!r} ({ep.value}) failed to load: {err!r}") from err
    raise CriticLoadError(f"unknown critic {name!r}; known critics: {', '.join(known_critics())}")


def build_critic(name: str | None, path: str | None, args: dict[str, Any], task: Any) -> Critic:
    """Construct the configured critic and check that it fits the `Critic` protocol."""
    factory = resolve_critic(name, path)
    label = path or name
    try:
        critic = factory(task=task, **args)
    except TypeError as err:
        raise CriticLoadError(f"critic {label!r} could not be built with args {args}: {err}") from err
    if not isinstance(critic, Critic) or not callable(getattr(critic, "critique", None)):
        raise CriticLoadError(
            f"critic {label!r} does not fit the Critic protocol (needs a `name` attribute and a "
            f"`critique(requests) -> list[Critique]` method). Known critics: {', '.join(known_critics())}"
        )
    return critic


def _import(module_name: str, attr: str, label: str) -> Callable[..., Critic]:
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any import failure is the user's to see
        raise CriticLoadError(
            f"{label}: importing {module_name} failed: {err!r}. "
            f"Known critics: {', '.join(known_critics())}"
        ) from err
    if not hasattr(module, attr):
        raise CriticLoadError(f"{label}: module {module_name} has no {attr}")
    return getattr(module, attr)
