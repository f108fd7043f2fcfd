"""Where critics are found: the built-ins, `module:Class` paths, registered classes and entry points.

The built-ins are listed as `"module:Class"` strings and imported only when built (as
skyrl-gym registers environments), so listing critic names imports no critic module and no
torch, and no critic module needs this one to register itself. A critic class is constructed
with the task (so it can read query metadata) and the config's `critic.args` as keyword
arguments: `Critic(task=task, **args)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from critics.protocol import Critic
from selftrain.registry import Registry, RegistryError

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

class CriticLoadError(RegistryError):
    """A critic could not be found, imported or built; the message lists the known critics."""


CRITICS: Registry[Callable[..., Critic]] = Registry("critic", BUILTIN_CRITICS, ENTRY_POINT_GROUP, CriticLoadError)
"""The critics' registry (see `selftrain.registry`)."""

register_critic = CRITICS.register
"""Class decorator: make a critic available as `critic.name: <name>` (it wins over a built-in
of the same name)."""


def known_critics() -> list[str]:
    """Every name `critic.name` accepts: built-ins, registered classes, entry points."""
    return CRITICS.names()


def resolve_critic(name: str | None = None, path: str | None = None) -> Callable[..., Critic]:
    """The critic factory named by `path` (`module:Class`) or `name` (registered class,
    built-in, entry point, in that order)."""
    return CRITICS.resolve(name, path)


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
