"""Tasks by name (`task.name`), by `module:Class` (`task.path`) or by entry point
(`selftrain.tasks`); built-ins are imported only when built.

The contract a task fulfils, with its optional abilities, is `selftrain/tasks/base.py`.
"""

from __future__ import annotations

from typing import Any

from selftrain.tasks.base import (
    Abilities,
    AgentTask,
    Demonstration,
    EmbeddedModel,
    InputCheck,
    PolicyLevels,
    Task,
    TaskFigures,
    abilities,
    check_task,
)
from selftrain.tasks.registry import TASKS, TaskLoadError, build_task, register_task

__all__ = [
    "TASKS",
    "Abilities",
    "AgentTask",
    "Demonstration",
    "EmbeddedModel",
    "InputCheck",
    "PolicyLevels",
    "Task",
    "TaskFigures",
    "TaskLoadError",
    "abilities",
    "build_task",
    "check_task",
    "make_task",
    "register_task",
]


def make_task(name: str, **args: Any) -> Task:
    """Build the task `name` with keyword `args` (see `build_task`)."""
    return build_task(name, None, args)
