"""The task contract: what every task supplies to the loop, and the optional abilities a task may
add (docs/design.md, "Tasks").

A new task implements `Task` and any of the ability protocols below, registers itself with
`register_task`, and is built with `make_task`, which checks once that every ability the task
started to implement is complete and has the documented parameters. The driver then asks
`abilities(task)` which abilities there are, never `getattr`:

- `AgentTask` (`env`): multi-turn episodes in an environment instead of one generation.
- `TaskFigures` (`extra_metrics`): task-specific figures in each round's metrics.json.
- `PolicyLevels` (`needs_policy_difficulty`, `assign_difficulty`, `set_difficulty`): levels
  that come from the base policy's solve rates, for data without levels.
- `InputCheck` (`check`): read the task's inputs before Ray starts, so bad data fails in seconds.
- `EmbeddedModel` (`describe`, `demonstrations`): the task can seed-train the embedded tiny
  base model, so it runs without `model.path`.
- `ChatMessage` (`user_message`): with `model.chat_template` on, the user turn to render is
  another text than the base-model prompt (math asks an instruct model to reason step by step
  and box its answer).
- `SolutionFormats` (`format_of`): names the format of a completion (countdown's step lines
  against one nested expression), for the format-share figures.
- `Graded` (`score`, `pass_threshold`): a score in [0, 1] per completion; passing = score >=
  threshold (selftrain/tasks/graded.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from selftrain.types import Query

if TYPE_CHECKING:
    import pandas as pd

    from selftrain.agent import AgentEnv


@dataclass(frozen=True)
class Demonstration:
    """One seed-SFT example of the embedded base model."""

    prompt: str
    completion: str
    masked_spans: tuple[tuple[int, int], ...] = ()
    """[start, end) character spans of `completion` the environment wrote (an agent's
    observations): context to read, masked from the loss."""


@runtime_checkable
class Task(Protocol):
    """A task: query splits with difficulty, prompt format, steps, answer checking."""

    name: str
    stop: tuple[str, ...]
    """Stop strings for generation (besides the tokenizer's EOS)."""

    def queries(self, split: str) -> list[Query]:
        """The deterministic query list of `split` ("train" pool or "test")."""
        ...

    def split_steps(self, completion: str) -> list[str]:
        """Segment a completion into the steps a critic judges."""
        ...

    def extract_answer(self, completion: str) -> str | None:
        """The final answer of a completion, or None when it has none."""
        ...

    def is_correct(self, query: Query, completion: str) -> bool:
        """Outcome check."""
        ...

    def solution_key(self, steps: list[str]) -> str:
        """Key under which two solutions count as the same path (`distinct_paths`)."""
        ...

    def reference_solutions(self, query: Query) -> list[str]:
        """Solver-written or dataset solutions (length reference of the tail histograms); []
        when there are none."""
        ...


@runtime_checkable
class AgentTask(Protocol):
    """A task whose rollouts are episodes: the rollout worker drives `agent.run_episodes` with
    the environment, and completions hold the observations (masked from the loss)."""

    def env(self) -> AgentEnv:
        """The retriever and turn limits of an episode; built once per rollout worker."""
        ...


@runtime_checkable
class TaskFigures(Protocol):
    """A task with figures of its own, added to each round's metrics.json."""

    def extra_metrics(self, *, samples: pd.DataFrame, train: pd.DataFrame, evals: pd.DataFrame,
                      test: Sequence[Query]) -> dict[str, float | None]:
        """Figures from the round's samples.parquet, train.parquet and eval.parquet, with the
        test queries the eval rows answer (their gold data). Undefined figures are None."""
        ...


@runtime_checkable
class PolicyLevels(Protocol):
    """A task whose levels come from the base policy (data without a level column).

    When `needs_policy_difficulty` is true, the driver calls `assign_difficulty({query_id:
    solve rate})` after round 0's generate and evaluate, and `set_difficulty(levels)` on resume.
    """

    @property
    def needs_policy_difficulty(self) -> bool:
        """Whether this configuration of the task takes its levels from the base policy."""
        ...

    def assign_difficulty(self, solve_rates: dict[str, float]) -> dict[str, int]:
        """Levels from solve rates (pool and test together); returns {query_id: level}."""
        ...

    def set_difficulty(self, levels: dict[str, int]) -> None:
        """Restore the levels `assign_difficulty` returned (a resumed run)."""
        ...


@runtime_checkable
class InputCheck(Protocol):
    """A task that reads user data: `check` loads it before Ray starts, so a missing file or
    column fails in seconds with `ConfigError` (exit 2), naming file, column and row."""

    def check(self) -> None: ...


@runtime_checkable
class EmbeddedModel(Protocol):
    """A task that can build the embedded tiny base model (used when `model.path` is unset)."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Everything that fixes the demonstrations: the model's cache key. Raises ConfigError
        when this configuration of the task has no base model (searchqa without
        `base_model_task`), with what to set instead."""
        ...

    def demonstrations(self, levels: Sequence[int], per_query: int, seed: int,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """Seed-SFT examples for queries of `levels`: fresh ones, in neither the test split nor
        the training pool, where the task can make them (`LevelStreams.fresh`); a dataset task
        has only its pool. `per_query` solutions per query where a query has several (drawn
        with `seed`); `extra_per_level` queries per level, None for the task's own default."""
        ...


@runtime_checkable
class ChatMessage(Protocol):
    """A task whose prompt for an instruct policy differs from its base-model prompt. With
    `model.chat_template` on, the policy sees `user_message(query)` as the user turn of its
    chat template; without this ability, the query's prompt is the user turn."""

    def user_message(self, query: Query) -> str: ...


@runtime_checkable
class SolutionFormats(Protocol):
    """A task whose completions come in formats it can tell apart; the round's metrics then
    state each format's share of the training set and of the test samples."""

    def format_of(self, completion: str) -> str | None:
        """The format's name, or None when the completion has none of the task's formats."""
        ...


@runtime_checkable
class Graded(Protocol):
    """A task whose completions get a score in [0, 1]; a completion *passes* (counts as correct)
    when its score is at least `pass_threshold`. The task's `is_correct` must agree. A task may
    also have `score_batch(query, completions)` for scores that depend on the other samples of
    the same prompt (selftrain/tasks/graded.py)."""

    @property
    def pass_threshold(self) -> float: ...

    def score(self, query: Query, completion: str) -> float | None:
        """The completion's score in [0, 1], or None when it cannot be scored (unknown)."""
        ...


ABILITIES: dict[str, type] = {
    "agent": AgentTask,
    "figures": TaskFigures,
    "policy_levels": PolicyLevels,
    "input_check": InputCheck,
    "embedded_model": EmbeddedModel,
    "chat_message": ChatMessage,
    "formats": SolutionFormats,
    "graded": Graded,
}
"""Field of `Abilities` -> the protocol a task implements to have it."""


@dataclass(frozen=True)
class Abilities:
    """The optional abilities of one task: the task itself, typed as that ability, or None."""

    agent: AgentTask | None
    figures: TaskFigures | None
    policy_levels: PolicyLevels | None
    """Set only when the task has the hooks and this configuration needs them."""
    input_check: InputCheck | None
    embedded_model: EmbeddedModel | None
    chat_message: ChatMessage | None
    formats: SolutionFormats | None
    graded: Graded | None


def _members(protocol: type) -> list[str]:
    return [m for m in protocol.__dict__ if not m.startswith("_")
            and (callable(protocol.__dict__[m]) or isinstance(protocol.__dict__[m], property))]


def _missing_parameters(method: Any, wanted: list[str]) -> list[str]:
    """The parameters in `wanted` that the task's bound `method` does not accept."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    return [n for n in wanted if n not in params]


def _check_ability(task: Any, protocol: type) -> None:
    """TypeError when `task` implements `protocol` only in part, or with other parameters."""
    members = _members(protocol)
    present = [m for m in members if hasattr(task, m)]
    if not present:
        return
    name = getattr(task, "name", type(task).__name__)
    where = f"task {name!r} ({type(task).__module__}.{type(task).__qualname__})"
    if len(present) < len(members):
        missing = sorted(set(members) - set(present))
        raise TypeError(f"{where} has {', '.join(present)} but not {', '.join(missing)}: the "
                        f"{protocol.__name__} ability needs all of {', '.join(members)} "
                        f"(see selftrain/tasks/base.py)")
    for m in members:
        spec = protocol.__dict__[m]
        if not callable(spec):
            continue
        wanted = [n for n in inspect.signature(spec).parameters if n != "self"]
        missing = _missing_parameters(getattr(task, m), wanted)
        if missing:
            raise TypeError(f"{where}: {m}() does not take {', '.join(missing)}; the "
                            f"{protocol.__name__} ability calls it with {', '.join(wanted)} "
                            f"(see selftrain/tasks/base.py)")


def check_task(task: Any) -> None:
    """Raise TypeError unless `task` has every `Task` member and only complete abilities."""
    missing = [m for m in ("name", "stop", *_members(Task)) if not hasattr(task, m)]
    if missing:
        raise TypeError(f"{type(task).__qualname__} is not a task: it lacks {', '.join(missing)} "
                        f"(see the Task protocol in selftrain/tasks/base.py)")
    for protocol in ABILITIES.values():
        _check_ability(task, protocol)


def abilities(task: Task) -> Abilities:
    """Which optional abilities `task` has (`make_task` has already checked they are whole)."""
    found = {field: task if isinstance(task, protocol) else None
             for field, protocol in ABILITIES.items()}
    if found["policy_levels"] is not None and not task.needs_policy_difficulty:  # type: ignore[attr-defined]
        found["policy_levels"] = None
    return Abilities(**found)
