"""An arm, built once from its config: filter x sampling x selection (docs/design.md, "The round").

The driver, the launcher and the checks ask the arm what it needs (`arm.needs_critic`), never
its name. The filter is the part that knows what a sample must have to be trained on, and so
what the arm needs besides the policy: the process filter needs a critic's verdicts.

A next training objective plugs in at the filter: preference tuning needs pairs, not rows, so
its filter will also say how it builds them from a query's samples (a method beside
`eligible`), and `select_training_set`'s callers ask the arm for that data instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from selftrain.arms import parts as arms
from selftrain.arms.registry import FILTERS, SAMPLINGS, register_filter
from selftrain.config import ArmConfig
from selftrain.types import Critique, Query, Sample


@runtime_checkable
class Filter(Protocol):
    """Which samples may be trained on, and what deciding that needs."""

    needs_critic: bool
    """Whether the arm runs a critic (critique and refine stages) for this filter's sake."""

    def eligible(self, samples: list[Sample], critiques: dict[str, Critique]) -> list[Sample]:
        """The samples (and refinements) that may become training rows, in sample order."""
        ...


@register_filter("rs")
class OutcomeFilter:
    """Rejection sampling: outcome-correct samples the policy drew (first pass and later
    waves; refinements are not the policy's own draws)."""

    needs_critic = False

    def eligible(self, samples: list[Sample], critiques: dict[str, Critique]) -> list[Sample]:
        return [s for s in samples if s.origin != "refine" and s.correct]


@register_filter("critique")
class CritiqueFilter:
    """The process filter: outcome-correct samples and refinements whose steps the critic
    passes."""

    needs_critic = True

    def eligible(self, samples: list[Sample], critiques: dict[str, Critique]) -> list[Sample]:
        return [s for s in samples if s.correct and s.sample_id in critiques
                and critiques[s.sample_id].passed]


@register_filter("top_m")
class ScoreFilter:
    """Graded tasks: every policy draw with a known score is eligible; `arm.top_m` then keeps
    the m best of each query by score, passing or not."""

    needs_critic = False

    def eligible(self, samples: list[Sample], critiques: dict[str, Critique]) -> list[Sample]:
        return [s for s in samples if s.origin != "refine" and s.score is not None]


@dataclass(frozen=True)
class Arm:
    """The arm's three parts, resolved once from `arm.*`; `config` keeps its numbers."""

    config: ArmConfig
    filter: Filter
    sampling_factory: Callable[[ArmConfig, list[Query], arms.Partition], arms.Sampling]

    @classmethod
    def of(cls, config: ArmConfig) -> Arm:
        """Resolve the filter (`arm.name`) and sampling strategy (`arm.sampling`) by name; an
        unknown name or a filter that does not fit `Filter` is a `RegistryError`."""
        if config.name == "top_m" and config.top_m is None:
            raise FILTERS.error("filter 'top_m' needs arm.top_m (how many samples per query to keep)")
        made = FILTERS.resolve(config.name)()
        if not isinstance(made, Filter):
            raise FILTERS.error(f"filter {config.name!r} does not fit the Filter protocol (needs "
                                f"`needs_critic` and `eligible(samples, critiques)`)")
        return cls(config, made, SAMPLINGS.resolve(config.sampling))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def needs_critic(self) -> bool:
        """Whether runs of this arm start a critic group and critique and refine."""
        return self.filter.needs_critic

    @property
    def adaptive(self) -> bool:
        """Whether sampling goes on in waves after the first pass (not `fixed`)."""
        return self.config.sampling != "fixed"

    def partition(self, solution_key: Callable[[list[str]], str]) -> arms.Partition:
        """The task's solution classes, as the arm's `diverse` settings define them."""
        return arms.Partition(solution_key, self.config.diverse.similarity)

    def sampling(self, pool: list[Query], partition: arms.Partition) -> arms.Sampling:
        """The sampling strategy for this pool."""
        return self.sampling_factory(self.config, pool, partition)

    def select(self, pool: list[Query], samples: list[Sample], critiques: dict[str, Critique],
               partition: arms.Partition, num_samples: int) -> list[Sample]:
        """The training set: eligible samples (the filter), exact duplicates of a query's
        completion dropped (`arm.dedup`), each query's ranked (`all`: sample order; `diverse`:
        solution classes round-robin; with `arm.top_m`: by score, highest first) and kept up to
        its row cap (`arms.row_cap`, and at most `top_m`). Rows come out in sample order."""
        kept = self.filter.eligible(samples, critiques)
        if self.config.dedup:
            kept = arms.drop_duplicates(kept)
        ranked = arms.by_query(kept)
        if self.config.selection == "diverse":
            ranked = {q: arms.diverse_order(classes) for q, classes in partition(ranked).items()}
        cap = arms.row_cap(self.config, self.sampling(pool, partition), num_samples)
        m = self.config.top_m
        if m is not None:  # graded tasks: the best m by score (unknown last), ties in sample order
            ranked = {q: sorted(group, key=lambda s: -(s.score if s.score is not None else -1.0))
                      for q, group in ranked.items()}
            return arms.take(kept, ranked, lambda q: m if cap(q) is None else min(m, cap(q)))
        return arms.take(kept, ranked, cap)
