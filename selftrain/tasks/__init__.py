"""Tasks by name. Importing this package registers the built-in tasks."""

from __future__ import annotations

from typing import Any

from selftrain.tasks import countdown, math, multihop, searchqa  # noqa: F401  (register themselves)
from selftrain.tasks.base import Task
from selftrain.tasks.registry import TASKS, register_task

__all__ = ["TASKS", "Task", "make_task", "register_task"]


def make_task(name: str, **args: Any) -> Task:
    """Build the registered task `name` with keyword `args` (the config's `task_args`)."""
    if name not in TASKS:
        known = ", ".join(sorted(TASKS)) or "(none)"
        raise ValueError(f"unknown task {name!r}; known tasks: {known}")
    return TASKS[name](**args)
