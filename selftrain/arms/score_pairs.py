"""Preference pairs on graded tasks: the two sides of a pair by score, not by pass or fail.

On a graded task (selftrain/tasks/graded.py) "better" is a number, so a pair is any two of a
query's samples whose scores differ by at least `train.dpo.score_margin`: chosen = the higher,
rejected = the lower. The arm's filter still decides what may be chosen (rs: the passing
samples; top_m: any sample with a known score); the rejected side may be any sample the policy
drew with a known score below it by the margin, a passing one included (a line that scores
0.8 against one that scores 1.0). Equal scores never pair (no preference to learn), and an
unknown score (a judge's unreadable answer) is on neither side: nothing is known about it.

Order: without `diverse` selection a query's candidates go highest score first (ties in sample
order); with it, the rarest solution class first (`selftrain.arms.parts.diverse_order`),
DARLING's idea for pairs. The rejected pool goes lowest score first, so the first pairs hold
the clearest preferences.
"""

from __future__ import annotations

from selftrain.types import Sample

TOLERANCE = 1e-9
"""Scores are floats: a difference of margin - 1e-9 still counts as the margin (1.0 - 0.9 is
0.09999999999999998)."""


def known(samples: list[Sample]) -> list[Sample]:
    """The samples with a known score, in their order."""
    return [s for s in samples if s.score is not None]


def by_score(samples: list[Sample]) -> list[Sample]:
    """Known-score samples, highest score first; ties keep sample order."""
    return sorted(known(samples), key=lambda s: -_value(s))


def score_pairs(chosen: list[Sample], scored: list[Sample],
                margin: float) -> list[tuple[Sample, Sample]]:
    """(chosen, rejected) pairs of one query. `chosen`: its candidates in preference order;
    `scored`: every sample of it that may be rejected. The rejected pool is the samples at
    least `margin` below the best candidate, lowest score first (ties in sample order);
    candidate i mod C is paired with the first sample of the pool, from position i mod W on
    (cyclically), that is at least `margin` below it and not yet paired with it, for
    i < max(C, W). Where every candidate is above every pool sample by the margin this is
    `selftrain.arms.pairs.outcome_pairs`' rule: every sample on both sides is used once before
    any repeats."""
    chosen = known(chosen)
    if not chosen:
        return []
    best = max(map(_value, chosen))
    pool = sorted((s for s in known(scored) if _below(s, best, margin)), key=_value)
    out: list[tuple[Sample, Sample]] = []
    seen: set[tuple[str, str]] = set()
    for i in range(max(len(chosen), len(pool)) if pool else 0):
        c = chosen[i % len(chosen)]
        for j in range(len(pool)):
            r = pool[(i + j) % len(pool)]
            if _below(r, _value(c), margin) and (c.sample_id, r.sample_id) not in seen:
                seen.add((c.sample_id, r.sample_id))
                out.append((c, r))
                break
    return out


def _value(sample: Sample) -> float:
    assert sample.score is not None, "only known scores are compared"
    return float(sample.score)


def _below(sample: Sample, score: float, margin: float) -> bool:
    """Whether `sample`'s known score is strictly below `score` by at least `margin`."""
    value = _value(sample)
    return value < score and score - value >= margin - TOLERANCE
