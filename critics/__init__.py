"""Critics: the `Critic` protocol, the registry and loader, and the built-in critics."""

from critics.protocol import Critic, Critique, CritiqueRequest, StepVerdict, checked
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
    "StepVerdict",
    "build_critic",
    "checked",
    "known_critics",
    "register_critic",
    "resolve_critic",
]
