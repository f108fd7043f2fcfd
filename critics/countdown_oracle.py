"""`countdown-oracle`: the exact step-level critic for the embedded countdown task."""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict
from selftrain.tasks.countdown import check_steps


class CountdownOracle:
    """A step is ok when its arithmetic is right, it uses only numbers still available, and the
    target can still be reached from what remains (exhaustive search, memoised)."""

    name = "countdown-oracle"

    def __init__(self, task: Any = None) -> None:
        self.task = task

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        out = []
        for req in requests:
            checks = check_steps(req.query.data["numbers"], req.query.data["target"], req.steps)
            verdicts = [StepVerdict(ok=c.ok, score=1.0 if c.ok else 0.0, feedback=c.reason or "ok")
                        for c in checks]
            out.append(Critique(sample_id=req.sample_id, critic=self.name, verdicts=verdicts))
        return out
