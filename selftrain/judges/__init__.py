"""Semantic equivalence judges: which of a test query's samples say the same thing.

The policy's class figures (`eval_classes`, `effective_div`, `passing_pair_div`) count the
classes a judge puts a query's samples into. Judges plug in like critics: the config's
`judge.name` (a built-in, a registered class, an entry point of group `selftrain.judges`) or
`judge.path` (`module:Class`), constructed as `Judge(task=task, **judge.args)`.

Built-ins: `solution-key` (the task's solution key, the default), `embedding` (MiniLM cosine
at or above a threshold), `classifier` (a pair classifier, as DARLING's DeBERTa), `lm` (a
served LM asked whether two answers are the same) and `lm-local` (the same question to a causal
LM in-process). The pair judges form classes as the
connected components of the "same" pairs (union-find), so the result does not depend on the
order of the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from selftrain.registry import Registry, RegistryError
from selftrain.types import Judge

__all__ = ["JUDGES", "Judge", "JudgeLoadError", "build_judge", "classes_from_pairs", "labels_of"]


class JudgeLoadError(RegistryError):
    """A judge could not be found, imported or built; the message lists the known judges."""


JUDGES: Registry[Callable[..., Judge]] = Registry(
    "judge",
    {
        "solution-key": "selftrain.judges.builtin:SolutionKeyJudge",
        "embedding": "selftrain.judges.builtin:EmbeddingJudge",
        "classifier": "selftrain.judges.classifier:ClassifierJudge",
        "lm": "selftrain.judges.lm:LMJudge",
        "lm-local": "selftrain.judges.lm_local:LocalLMJudge",
    },
    error=JudgeLoadError,
)
"""The judges' registry (see `selftrain.registry`)."""

register_judge = JUDGES.register
"""Class decorator: make a judge available as `judge.name: <name>`."""


def build_judge(name: str | None, path: str | None, args: dict[str, Any], task: Any) -> Judge:
    """Construct the configured judge and check that it fits the `Judge` protocol."""
    factory = JUDGES.resolve(name, path)
    label = path or name
    try:
        judge = factory(task=task, **args)
    except TypeError as err:
        raise JudgeLoadError(f"judge {label!r} could not be built with args {args}: {err}") from err
    if not isinstance(judge, Judge):
        raise JudgeLoadError(f"judge {label!r} does not fit the Judge protocol (needs a `name` "
                             f"attribute and a `classes(groups) -> list[list[int]]` method). "
                             f"Known judges: {JUDGES.known()}")
    return judge


def labels_of(keys: Sequence[Any]) -> list[int]:
    """Class labels 0, 1, ... in order of first appearance of equal `keys`."""
    first: dict[Any, int] = {}
    return [first.setdefault(k, len(first)) for k in keys]


SamePairs = Callable[[list[tuple[str, str]]], list[bool]]
"""Pairs of texts -> whether each pair is equivalent (one batched call)."""


def classes_from_pairs(groups: Sequence[Sequence[str]], same: SamePairs) -> list[list[int]]:
    """Classes as connected components of the pairs `same` calls equivalent. Every pair of
    distinct texts of a group is asked once per call (identical texts are one class without
    asking), so groups that are subsets of others (a query's passing samples) cost nothing."""
    pairs = sorted({(a, b) if a < b else (b, a) for group in groups
                    for i, a in enumerate(group) for b in group[i + 1:] if a != b})
    verdicts = dict(zip(pairs, same(pairs))) if pairs else {}
    out = []
    for group in groups:
        parent = list(range(len(group)))
        for i, a in enumerate(group):
            for j in range(i + 1, len(group)):
                b = group[j]
                if a == b or verdicts[(a, b) if a < b else (b, a)]:
                    parent[_root(parent, j)] = _root(parent, i)
        out.append(labels_of([_root(parent, i) for i in range(len(group))]))
    return out


def _root(parent: list[int], i: int) -> int:
    """Union-find root of `i`, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


__all__ = ["JUDGES", "Judge", "JudgeLoadError", "build_judge", "classes_from_pairs",
           "labels_of", "register_judge"]
