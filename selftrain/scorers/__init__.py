"""Scorers: what grades a completion in [0, 1] for a graded task (selftrain/tasks/graded.py),
pluggable through one registry (`SCORERS`, kind "scorer", entry point group
`selftrain.scorers`). The built-ins: `reward_model` (a transformers sequence-classification
reward model), `judge` (a served OpenAI-compatible model with a rubric prompt); any
`module:function` path is a plain Python scorer."""

from selftrain.scorers.base import (
    SCORERS,
    Score,
    Scorer,
    ScorerLoadError,
    build_scorer,
    register_scorer,
)

__all__ = ["SCORERS", "Score", "Scorer", "ScorerLoadError", "build_scorer", "register_scorer"]
