"""Task registry: configs name a task (`task: countdown`) and the loop builds it by that name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from selftrain.tasks.base import Task

TASKS: dict[str, Callable[..., Task]] = {}
"""Registered task factories (usually the task class itself), by name."""

F = TypeVar("F", bound=Callable[..., Task])


def register_task(name: str) -> Callable[[F], F]:
    """Class decorator that makes a task buildable by `make_task(name, ...)`."""

    def decorate(factory: F) -> F:
        if name in TASKS and TASKS[name] is not factory:
            raise ValueError(f"task name {name!r} is already registered by {TASKS[name]!r}")
        TASKS[name] = factory
        return factory

    return decorate
