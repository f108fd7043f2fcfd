"""How an arm turns the query pool into a training set, in three parts that compose.

    sampling    how many samples each query gets           arm.sampling:  fixed | balanced | distinct
    filter      which samples may be trained on            arm.name:      rs | critique
                (the filters are in `selftrain.arms.arm`, which puts the three together)
    selection   which of a query's eligible samples come   arm.selection: all | diverse
                first, up to the query's row cap

`fixed` draws K samples per query (`rollout.num_samples`; a budget-matched arm tops every query
up evenly). The adaptive strategies draw in *waves* of K: after each wave a strategy says how
much each query still needs, and the next wave samples every query that needs more in one
batched call (`stages.generate_pool`). `balanced` is difficulty-aware rejection sampling
(DART-Math, Tong et al. 2024): a query is sampled until it holds its target of correct samples.
`distinct` samples again the queries whose correct samples are all one solution. The filter is
the rule of docs/design.md; `diverse` selection (in the spirit of DARLING) then takes a query's
solution classes round-robin, so distinct solutions come before repeats of one solution.

Everything here is pure: samples in, samples out (the MiniLM embedder aside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from selftrain.types import Query, Sample

if TYPE_CHECKING:
    from selftrain.config import ArmConfig
    from selftrain.metrics.embed import Embedder

Classes = list[list[Sample]]
"""A query's samples split into solution classes, each in sample order."""


def by_query(samples: list[Sample]) -> dict[str, list[Sample]]:
    """query_id -> its samples, in sample order (queries in order of first appearance)."""
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.query_id, []).append(s)
    return out


# -- solution classes -----------------------------------------------------------------------


@dataclass
class Partition:
    """Splits each query's samples into solution classes.

    Two samples are one class when the task's `solution_key` of their steps is equal (the key
    `distinct_paths` counts). Free-text tasks, whose keys rarely repeat, can also merge classes
    whose first members' MiniLM embeddings (selftrain/metrics/embed.py) have cosine similarity
    >= `similarity`: greedily, each class joins the first earlier class it is that close to.
    """

    key: Callable[[list[str]], str]
    similarity: float | None = None
    embedder: Embedder | None = field(default=None, repr=False)

    def __call__(self, groups: dict[str, list[Sample]]) -> dict[str, Classes]:
        keyed = {q: _by_key(group, self.key) for q, group in groups.items()}
        if self.similarity is None:
            return keyed
        from selftrain.metrics.embed import Embedder

        self.embedder = self.embedder or Embedder()
        # one batched call for the whole round: the first member of every class
        emb = self.embedder.encode([cls[0].completion for cs in keyed.values() for cls in cs])
        out, start = {}, 0
        for q, classes in keyed.items():
            out[q] = _merge_similar(classes, emb[start : start + len(classes)], self.similarity)
            start += len(classes)
        return out


def _by_key(samples: list[Sample], key: Callable[[list[str]], str]) -> Classes:
    classes: dict[str, list[Sample]] = {}
    for s in samples:
        classes.setdefault(key(s.steps), []).append(s)
    return list(classes.values())


def _merge_similar(classes: Classes, emb, threshold: float) -> Classes:
    """Greedy leader clustering of the classes by the (unit-norm) embeddings of their heads."""
    leaders: list[int] = []
    merged: Classes = []
    for i, cls in enumerate(classes):
        for j, lead in enumerate(leaders):
            if float(emb[i] @ emb[lead]) >= threshold:
                merged[j] = merged[j] + cls
                break
        else:
            leaders.append(i)
            merged.append(list(cls))
    return merged


# -- sampling -------------------------------------------------------------------------------


class Sampling(Protocol):
    """A sampling strategy: after each wave, how much each query still needs."""

    def needs(self, drawn: dict[str, list[Sample]]) -> dict[str, int]:
        """query_id -> what the query still needs (0: done). When the token budget cannot pay
        for a whole wave, the queries that need most are sampled first."""
        ...

    def keep(self, query_id: str) -> int | None:
        """Training rows the strategy lets the query keep (None: no limit of its own)."""
        ...


SamplingFactory = Callable[["ArmConfig", list[Query], Partition], Sampling]
"""What `arm.sampling` names in `selftrain.arms.registry.SAMPLINGS`: (arm config, pool,
partition) -> Sampling."""


@dataclass
class Fixed:
    """K samples per query and no more waves."""

    def needs(self, drawn: dict[str, list[Sample]]) -> dict[str, int]:
        return dict.fromkeys(drawn, 0)

    def keep(self, query_id: str) -> int | None:
        return None


@dataclass
class Balanced:
    """Sample a query until it holds `targets[query_id]` correct samples; keep that many."""

    targets: dict[str, int]

    def needs(self, drawn: dict[str, list[Sample]]) -> dict[str, int]:
        return {q: max(0, self.targets[q] - sum(s.correct for s in samples))
                for q, samples in drawn.items()}

    def keep(self, query_id: str) -> int | None:
        return self.targets[query_id]


@dataclass
class Distinct:
    """Sample again the queries whose correct samples all fall into one solution class."""

    partition: Partition

    def needs(self, drawn: dict[str, list[Sample]]) -> dict[str, int]:
        correct = {q: [s for s in samples if s.correct] for q, samples in drawn.items()}
        classes = self.partition({q: c for q, c in correct.items() if c})
        return {q: int(len(classes.get(q, [])) == 1) for q in drawn}

    def keep(self, query_id: str) -> int | None:
        return None


def balanced_targets(levels: dict[str, int], mode: str, target: int) -> dict[str, int]:
    """Correct samples each query wants. uniform: `target` for every query. prop2diff
    (proportional to difficulty, here the task's level): level L wants ceil(target * L / H),
    at least 1, where H is the pool's hardest level, which wants `target`."""
    if mode == "uniform":
        return dict.fromkeys(levels, target)
    hardest = max(levels.values())
    return {q: max(1, math.ceil(target * level / hardest)) for q, level in levels.items()}


def fixed_sampling(arm: ArmConfig, pool: list[Query], partition: Partition) -> Sampling:
    return Fixed()


def balanced_sampling(arm: ArmConfig, pool: list[Query], partition: Partition) -> Sampling:
    levels = {q.query_id: q.difficulty for q in pool}
    return Balanced(balanced_targets(levels, arm.balanced.mode, arm.balanced.target))


def distinct_sampling(arm: ArmConfig, pool: list[Query], partition: Partition) -> Sampling:
    return Distinct(partition)


Draw = Callable[[list[Query], int], list[Sample]]
"""(queries, first_index) -> K new samples of each query, numbered from `first_index` on."""


def sample_waves(pool: list[Query], first: list[Sample], sampling: Sampling, draw: Draw,
                 num_samples: int, max_waves: int, budget: int | None) -> tuple[list[Sample], int]:
    """Waves 2..`max_waves` of adaptive sampling after the first pass `first`: every query
    that still needs something gets K (`num_samples`) more samples, all of them in one `draw`
    per wave. A token budget is a ceiling: when what is left of it cannot pay for a whole
    wave, a last wave goes to the queries that need most, as many as it pays for (a query's
    K samples priced at its own mean tokens per sample so far). Returns the extra samples and
    the number of waves drawn (the first pass included)."""
    drawn = by_query(first)
    spent, extra, waves = sum(s.num_tokens for s in first), [], 1
    for wave in range(1, max_waves):
        needs = sampling.needs(drawn)
        pending = [q for q in pool if needs.get(q.query_id, 0) > 0]
        todo = pending
        if budget is not None:
            price = {q.query_id: num_samples * _tokens_per_sample(drawn[q.query_id])
                     for q in pending}
            todo = affordable(pending, needs, price, budget - spent)
        if not todo:
            break
        new = draw(todo, wave * num_samples)
        for s in new:
            drawn[s.query_id].append(s)
        extra += new
        spent, waves = spent + sum(s.num_tokens for s in new), wave + 1
        if len(todo) < len(pending):  # the budget is spent
            break
    return extra, waves


def _tokens_per_sample(samples: list[Sample]) -> float:
    return max(1.0, sum(s.num_tokens for s in samples) / len(samples))


def affordable(pending: list[Query], needs: dict[str, int], price: dict[str, float],
               left: float) -> list[Query]:
    """The queries of `pending` that `left` tokens pay for, neediest first (ties: the earlier;
    one that does not fit is passed over), in `pending` order."""
    chosen = set()
    for i in sorted(range(len(pending)), key=lambda i: -needs[pending[i].query_id]):
        if price[pending[i].query_id] <= left:
            chosen.add(i)
            left -= price[pending[i].query_id]
    return [q for i, q in enumerate(pending) if i in chosen]


# -- filter and selection -------------------------------------------------------------------


def drop_duplicates(samples: list[Sample]) -> list[Sample]:
    """Exact repeats of a query's completion dropped; the first is kept."""
    seen: set[tuple[str, str]] = set()
    out = []
    for s in samples:
        if (s.query_id, s.completion) not in seen:
            seen.add((s.query_id, s.completion))
            out.append(s)
    return out


def diverse_order(classes: Classes) -> list[Sample]:
    """Round robin over the classes, the rarest first (ties: order of first appearance): one
    sample of every distinct solution before the second sample of any."""
    ranked = sorted(classes, key=len)
    return [cls[i] for i in range(max(map(len, ranked), default=0)) for cls in ranked
            if i < len(cls)]


def take(samples: list[Sample], ranked: dict[str, list[Sample]],
         cap: Callable[[str], int | None]) -> list[Sample]:
    """The first `cap(query)` samples of each query's ranking (all of them when the cap is
    None), returned in the order of `samples`."""
    chosen = {s.sample_id for q, group in ranked.items() for s in group[: cap(q)]}
    return [s for s in samples if s.sample_id in chosen]


def row_cap(arm: ArmConfig, sampling: Sampling, num_samples: int) -> Callable[[str], int | None]:
    """Training rows a query may keep: the lowest of `arm.per_query_cap`, the sampling
    strategy's own limit (balanced: the query's target) and, for diverse selection without
    either, K (`num_samples`): ordering only matters where a cap cuts."""
    def cap(query_id: str) -> int | None:
        limits = [c for c in (arm.per_query_cap, sampling.keep(query_id)) if c is not None]
        if not limits and arm.selection == "diverse":
            limits = [num_samples]
        return min(limits) if limits else None

    return cap
