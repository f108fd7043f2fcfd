"""Critics: the `Critic` protocol, the registry and loader. The built-in critics live in their
own modules, imported only when a config names them (see `critics.registry.BUILTIN_CRITICS`)."""

from critics.protocol import (
    Critic,
    Critique,
    CritiqueRequest,
    PreflightCheck,
    StepVerdict,
    checked,
)
from critics.registry import (
    CriticLoadError,
    build_critic,
    known_critics,
    register_critic,
    resolve_critic,
)

__all__ = [
    "Critic",
    "CriticLoadError",
    "Critique",
    "CritiqueRequest",
    "PreflightCheck",
    "StepVerdict",
    "build_critic",
    "checked",
    "known_critics",
    "register_critic",
    "resolve_critic",
]
