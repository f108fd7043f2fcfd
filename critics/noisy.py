"""`noisy`: any critic with each step verdict flipped at a known rate, to study critic quality."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict, checked
from critics.registry import build_critic


class NoisyCritic:
    """Wraps `base` (a registry name) and flips each verdict with probability `flip_prob`.

    The coin of a step depends only on (seed, sample_id, step index), so the same sample gets
    the same noise whichever worker critiques it and however requests are batched.
    """

    def __init__(self, task: Any = None, base: str = "countdown-oracle", flip_prob: float = 0.1,
                 seed: int = 0, base_args: dict[str, Any] | None = None) -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"noisy critic: flip_prob must be in [0, 1], got {flip_prob}")
        self.base = build_critic(base, None, base_args or {}, task)
        self.flip_prob = flip_prob
        self.seed = seed
        self.name = f"noisy({self.base.name},p={flip_prob})"

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        out = []
        for req, crit in zip(requests, checked(self.base, requests)):
            digest = hashlib.sha256(f"{self.seed}:{req.sample_id}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "little"))
            verdicts = []
            for v in crit.verdicts:
                if v.ok is not None and rng.random() < self.flip_prob:
                    ok = not v.ok
                    v = StepVerdict(ok=ok, score=1.0 - v.score,
                                    feedback="ok" if ok else "flagged (noisy critic)")
                verdicts.append(v)
            out.append(Critique(sample_id=crit.sample_id, critic=self.name, verdicts=verdicts,
                                raw_text=crit.raw_text, tokens=crit.tokens))
        return out
