"""A test critic: the exact countdown oracle, slowed down so a test can kill its worker mid-stage."""

from __future__ import annotations

import time

from critics import Critique, CritiqueRequest
from critics.countdown_oracle import CountdownOracle


class SlowOracle:
    name = "slow-oracle"

    def __init__(self, task, delay_s: float = 0.3) -> None:
        self.oracle = CountdownOracle(task=task)
        self.delay_s = delay_s

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        time.sleep(self.delay_s)
        return self.oracle.critique(requests)
