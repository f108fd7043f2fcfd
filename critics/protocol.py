"""The critic interface: batched, step-level verdicts on policy samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from selftrain.types import Query


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
class Critic(Protocol):
    """Labels every step of every request. Must return one `Critique` per request, in order,
    each with exactly one verdict per step."""

    name: str

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]: ...


@runtime_checkable
class PreflightCheck(Protocol):
    """A critic that depends on something outside the run (a server, an API key) and can check
    it before round 0; `selftrain.checks.preflight` calls `check()`, which raises
    `CriticLoadError` with what to fix."""

    def check(self) -> None: ...


class CriticOutputError(RuntimeError):
    """A critic broke the protocol (wrong number of critiques or verdicts)."""


def checked(critic: Critic, requests: list[CritiqueRequest]) -> list[Critique]:
    """Call the critic and hold it to the protocol: one critique per request, matched by
    `sample_id` (a critic may return them in any order), one verdict per step. Returned in the
    order of the requests; a missing, unknown or repeated id names the critic and the ids."""
    out = critic.critique(requests)
    by_id: dict[str, Critique] = {}
    repeated = []
    for crit in out:
        if crit.sample_id in by_id:
            repeated.append(crit.sample_id)
        by_id[crit.sample_id] = crit
    asked = [r.sample_id for r in requests]
    missing = [i for i in asked if i not in by_id]
    unknown = sorted(set(by_id) - set(asked))
    if missing or unknown or repeated:
        said = [f"{name} {_ids(ids)}" for name, ids in (("missing", missing),
                ("not asked for", unknown), ("repeated", repeated)) if ids]
        raise CriticOutputError(
            f"critic {critic.name!r} returned {len(out)} critiques for {len(requests)} requests: "
            f"{'; '.join(said)} (critiques are matched to requests by sample_id)")
    for req in requests:
        crit = by_id[req.sample_id]
        if len(crit.verdicts) != len(req.steps):
            raise CriticOutputError(
                f"critic {critic.name!r} returned {len(crit.verdicts)} verdicts for sample "
                f"{req.sample_id} which has {len(req.steps)} steps"
            )
    return [by_id[i] for i in asked]


def _ids(ids: list[str], shown: int = 5) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more
