"""The critic interface: batched, step-level verdicts on policy samples. The records it trades
in (`CritiqueRequest`, `Critique`, `StepVerdict`) live with the other run-folder records in
`selftrain.types`, so the run folder and the stages need no critic code."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from selftrain.types import Critique, CritiqueRequest, StepVerdict

__all__ = ["Critic", "Critique", "CritiqueRequest", "PreflightCheck", "StepVerdict", "checked"]


@runtime_checkable
class Critic(Protocol):
    """Labels every step of every request. Must return one `Critique` per request, in order,
    each with exactly one verdict per step."""

    name: str

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]: ...


@runtime_checkable
class PreflightCheck(Protocol):
    """A critic that depends on something outside the run (a server, an API key) and can check
    it before round 0; `selftrain.loop.checks.preflight` calls `check()`, which raises
    `CriticLoadError` with what to fix."""

    def check(self) -> None: ...


class CriticOutputError(RuntimeError):
    """A critic broke the protocol (wrong number of critiques or verdicts)."""


def checked(critic: Critic, requests: list[CritiqueRequest]) -> list[Critique]:
    """Call the critic and hold it to the protocol, naming the critic and the sample on failure."""
    out = critic.critique(requests)
    if len(out) != len(requests):
        raise CriticOutputError(
            f"critic {critic.name!r} returned {len(out)} critiques for {len(requests)} requests"
        )
    for req, crit in zip(requests, out):
        if len(crit.verdicts) != len(req.steps):
            raise CriticOutputError(
                f"critic {critic.name!r} returned {len(crit.verdicts)} verdicts for sample "
                f"{req.sample_id} which has {len(req.steps)} steps"
            )
    return out
