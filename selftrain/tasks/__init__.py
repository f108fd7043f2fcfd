"""Tasks by name. Importing this package registers the built-in tasks.

The contract a task fulfils, with its optional abilities, is `selftrain/tasks/base.py`.
"""

from __future__ import annotations

from typing import Any

from selftrain.tasks import code, code_data, countdown, math, multihop, searchqa  # noqa: F401  (register themselves)
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
from selftrain.tasks.registry import TASKS, register_task

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
    "abilities",
    "check_task",
    "make_task",
    "register_task",
]


def make_task(name: str, **args: Any) -> Task:
    """Build the registered task `name` with keyword `args` (the config's `task_args`).

    The built task is checked against the contract once here (`check_task`): a missing required
    method, or an ability implemented in part or with other parameters, is a TypeError that
    names the task and the method.
    """
    if name not in TASKS:
        known = ", ".join(sorted(TASKS)) or "(none)"
        raise ValueError(f"unknown task {name!r}; known tasks: {known}")
    task = TASKS[name](**args)
    check_task(task)
    return task
