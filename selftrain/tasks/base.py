"""The `Task` interface: what a task supplies to the loop (docs/design.md)."""

from __future__ import annotations

from typing import Protocol

from selftrain.types import Query


class Task(Protocol):
    """A task: query splits with difficulty, prompt format, steps, answer checking.

    Optional hook, for data without levels: a task whose `needs_policy_difficulty` is true gets
    `assign_difficulty({query_id: base-policy solve rate})` from the driver after round 0's
    generate and evaluate, and `set_difficulty(levels)` on resume (see `tasks/math.py`).
    """

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
        """Solver-written solutions (demonstrations for the embedded base model, length reference)."""
        ...
