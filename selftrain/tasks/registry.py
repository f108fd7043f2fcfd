"""Where tasks are found: the built-ins, `module:Class` paths (`task.path`), registered classes
and the `selftrain.tasks` entry points, through the one registry mechanism (`selftrain.registry`).

The built-ins are `"module:Class"` strings, imported only when built, so listing task names
imports no task module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selftrain.registry import Registry, RegistryError
from selftrain.tasks.base import Task, check_task


class TaskLoadError(RegistryError):
    """A task could not be found, imported or built; the message names it and lists the known tasks."""


BUILTIN_TASKS: dict[str, str] = {
    "code": "selftrain.tasks.code:CodeTask",
    "code_data": "selftrain.tasks.code_data:CodeDataTask",
    "countdown": "selftrain.tasks.countdown:CountdownTask",
    "lexicon_lines": "selftrain.tasks.lexicon_lines:LexiconLinesTask",
    "math": "selftrain.tasks.math:MathTask",
    "multihop": "selftrain.tasks.multihop:MultihopTask",
    "open_ended": "selftrain.tasks.open_ended:OpenEndedTask",
    "searchqa": "selftrain.tasks.searchqa:SearchQATask",
}
"""Name -> import path of the tasks shipped with selftrain."""

TASKS: Registry[Callable[..., Task]] = Registry("task", BUILTIN_TASKS, "selftrain.tasks", TaskLoadError)
"""The tasks' registry (`task.name`, `task.path`, entry point group `selftrain.tasks`)."""

register_task = TASKS.register
"""Class decorator: make a task available as `task.name: <name>`."""


def build_task(name: str | None, path: str | None = None, args: dict[str, Any] | None = None) -> Task:
    """Build the task named by `path` (`module:Class`) or `name`, with keyword `args` (the
    config's `task.args`), and check it against the contract once (`check_task`): an unknown
    name, a failing import, wrong args or a missing `Task` method is a `TaskLoadError` that
    names the task."""
    factory = TASKS.resolve(name, path)
    label, args = path or name, args or {}
    try:
        task = factory(**args)
    except TypeError as err:
        raise TaskLoadError(f"task {label!r} could not be built with task.args {args}: {err}") from err
    try:
        check_task(task)
    except TypeError as err:
        raise TaskLoadError(f"task {label!r}: {err}") from err
    return task
