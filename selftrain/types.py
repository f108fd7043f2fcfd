"""The records that cross stage boundaries. Each maps onto one row of a run-folder parquet file.

The critique records are here too (the critics package re-exports them): the run folder, the
arms and the stages read and write them without importing any critic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Query:
    """One task query. `data` holds what the task needs to check answers (numbers, gold, ...)."""

    query_id: str
    difficulty: int
    prompt: str
    """What the policy sees: the task's prompt, or with `model.chat_template` its user message
    rendered in the policy's chat template (generation continues inside the assistant turn)."""
    data: dict[str, Any] = field(default_factory=dict)
    user_message: str | None = None
    """With a chat template: the user turn that `prompt` renders (a rewrite refinement asks
    again in a new user turn built from it); None when `prompt` is the task's own text."""


@dataclass
class Sample:
    """One policy sample or refinement (a row of `samples.parquet`)."""

    sample_id: str
    query_id: str
    difficulty: int
    prompt: str
    completion: str
    steps: list[str]
    answer: str | None
    correct: bool
    origin: str = "sample"
    """"sample" (first pass), "extra" (a later wave of balanced or distinct sampling) or
    "refine" (a critique-guided repair)."""
    parent_id: str | None = None
    num_tokens: int = 0
    loss_mask: list[list[int]] | None = None
    """Character spans [start, end) of `completion` excluded from the SFT loss (agent observations)."""
    score: float | None = None
    """A graded task's score in [0, 1] (`correct` = score >= its pass threshold); None for an
    ungraded task or an unknown score."""

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CritiqueRequest:
    """What a critic sees: the query (prompt and task metadata) and the sample's steps."""

    sample_id: str
    query: Query
    steps: list[str]
    completion: str = ""


@dataclass
class StepVerdict:
    ok: bool | None
    """True / False, or None when the critic's output for this step could not be parsed."""
    score: float
    """Confidence that the step is right, in [0, 1]."""
    feedback: str = ""


@dataclass
class Critique:
    sample_id: str
    critic: str
    verdicts: list[StepVerdict]
    raw_text: str | None = None
    """The critic's own text, for generative critics."""
    tokens: int = 0
    """Tokens the critic generated for this critique (`critic_tokens`)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first_error(self) -> int:
        """Index of the first step not judged ok (unknown counts as not ok), -1 when none."""
        for i, v in enumerate(self.verdicts):
            if v.ok is not True:
                return i
        return -1

    @property
    def passed(self) -> bool:
        return self.first_error == -1

    @property
    def feedback(self) -> str:
        """The feedback of the flagged steps, one line each, as the rewrite prompt shows it."""
        lines = [f"Step {i + 1}: {v.feedback}" for i, v in enumerate(self.verdicts) if v.ok is not True]
        return "\n".join(lines)

    def row(self) -> dict[str, Any]:
        """One row of `critiques.parquet`."""
        return {
            "sample_id": self.sample_id,
            "critic": self.critic,
            "step_ok": [bool(v.ok) for v in self.verdicts],
            "step_unknown": [v.ok is None for v in self.verdicts],
            "step_score": [float(v.score) for v in self.verdicts],
            "step_feedback": [v.feedback for v in self.verdicts],
            "first_error": self.first_error,
            "feedback": self.feedback,
            "raw_text": self.raw_text,
            "critic_tokens": self.tokens,
        }


@runtime_checkable
class Judge(Protocol):
    """Splits groups of completions into classes of equivalent ones."""

    name: str

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        """One label per completion of each group; equal labels = one class. Labels number a
        group's classes 0, 1, ... in order of first appearance."""
        ...
