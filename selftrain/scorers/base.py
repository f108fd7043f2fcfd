"""The scorer contract, its registry, and plain Python scorers.

A scorer grades a batch of (prompt, completion) pairs; each grade is a `Score`: the value in
[0, 1] a graded task compares with its pass threshold, or None when it is unknown (a judge's
answer that cannot be read), and the scorer's raw output beside it (a reward model's logit, a
judge's text), so a run keeps what the value was made from.

Config (a graded task's `task.args.scorer`, or anywhere a scorer is named):

    scorer: {name: reward_model, args: {model: OpenAssistant/reward-model-deberta-v3-large-v2}}
    scorer: {name: judge, args: {base_url: http://127.0.0.1:8000/v1, model: Qwen/Qwen2.5-7B-Instruct}}
    scorer: {path: my_pkg.grading:length_score}

A `path` (or a registered name) that resolves to a class is built with `args` and must fit
`Scorer`; one that resolves to a function is a plain scorer `f(prompt, completion, **args) ->
float | None`, called once per pair.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from selftrain.registry import Registry, RegistryError


class ScorerLoadError(RegistryError):
    """A scorer could not be found, imported or built; the message names it."""


@dataclass(frozen=True)
class Score:
    """One grade: `value` in [0, 1] or None (unknown), and what it was made from."""

    value: float | None
    raw: float | str | None = None
    error: str | None = None
    """Why the value is unknown (an unreadable answer, no answer); None when it is known."""


@runtime_checkable
class Scorer(Protocol):
    name: str

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Score]:
        """One `Score` per (prompt, completion) pair, in order."""
        ...


SCORERS: Registry[Any] = Registry("scorer", {
    "reward_model": "selftrain.scorers.reward_model:RewardModelScorer",
    "judge": "selftrain.scorers.judge:JudgeScorer",
}, "selftrain.scorers", ScorerLoadError)
"""`scorer.name` -> a class built with `scorer.args` that fits `Scorer`, or a plain function."""

register_scorer = SCORERS.register


@dataclass
class FunctionScorer:
    """A plain Python scorer: `fn(prompt, completion, **args)` per pair. A value outside [0, 1]
    is an error naming the function (a scorer that returns logits must squash them itself)."""

    fn: Callable[..., float | None]
    args: dict[str, Any]
    name: str = "python"

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Score]:
        out = []
        for p, c in zip(prompts, completions):
            v = self.fn(p, c, **self.args)
            if v is not None and not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"scorer {self.name}: returned {v!r}, outside [0, 1]")
            out.append(Score(None if v is None else float(v), v,
                             None if v is not None else "the function returned None"))
        return out


def build_scorer(spec: dict[str, Any]) -> Scorer:
    """The scorer a config names: {name or path, args}."""
    unknown = set(spec) - {"name", "path", "args"}
    if unknown or not (spec.get("name") or spec.get("path")):
        raise ScorerLoadError(f"a scorer is {{name: ..., args: {{...}}}} or {{path: module:function}}; "
                              f"got {spec!r}; known scorers: {SCORERS.known()}")
    made = SCORERS.resolve(spec.get("name"), spec.get("path"))
    label, args = spec.get("path") or spec.get("name"), dict(spec.get("args") or {})
    if not inspect.isclass(made):
        return FunctionScorer(made, args, name=str(label))
    try:
        scorer = made(**args)
    except TypeError as err:
        raise ScorerLoadError(f"scorer {label!r} could not be built with args {args}: {err}") from err
    if not isinstance(scorer, Scorer):
        raise ScorerLoadError(f"scorer {label!r} does not fit the Scorer protocol (needs `name` "
                              f"and `score(prompts, completions)`)")
    return scorer
