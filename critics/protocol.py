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
