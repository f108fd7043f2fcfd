"""`code`: the embedded code task. Write the body of `f(xs)`, a pipeline of list operations
the prompt names, checked by running tests in the sandbox.

Prompt:      "# if x % 2 == 0 | x * 3 | sum\\ndef f(xs):\\n"
Completion:  "    xs = [x for x in xs if x % 2 == 0]\\n    xs = [x * 3 for x in xs]\\n    return sum(xs)\\n"

Level = number of operations. Solvers write each operation as a comprehension, a builtin
(map/filter) or a loop, so a level-L problem has up to 3^(L-1)·2 correct programs of different
length and shape. A step is a line. Extra inputs (beyond the tests) give behaviour classes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pandas as pd

from selftrain.metrics.code import normalise_program
from selftrain.sandbox import ExecResult
from selftrain.tasks.base import Demonstration
from selftrain.tasks.code_exec import (
    ProgramRunner,
    behaviour_test,
    code_figures,
    program_lines,
    run_task_programs,
)
from selftrain.tasks.code_programs import (
    HEADER,
    Op,
    all_solutions,
    draw_problem,
    run_problem,
    spec_line,
)
from selftrain.tasks.levels import LevelStreams
from selftrain.tasks.registry import register_task
from selftrain.types import Query


def _draw_list(rng: random.Random, negatives: bool = False) -> list[int]:
    low = -5 if negatives else 0
    return [rng.randint(low, 9) for _ in range(rng.randint(3, 6))]


@register_task("code")
class CodeTask:
    """Embedded list-pipeline programs, one stream of distinct problems per level."""

    name = "code"
    stop: tuple[str, ...] = ()

    def __init__(self, levels: Sequence[int] = (2, 3, 4), seed: int = 0,
                 train_per_level: int = 40, test_per_level: int = 20, tests_per_query: int = 3,
                 extra_inputs: int = 5, timeout_s: float = 2.0, memory_mb: int = 256) -> None:
        if not levels or min(levels) < 2:
            raise ValueError(f"code levels are numbers of operations, at least 2 (level 1 has "
                             f"only 4 problems); got {levels!r}")
        self.seed = seed
        self.tests_per_query = tests_per_query
        self.extra_inputs = extra_inputs
        self.streams = LevelStreams(
            "code", seed, levels, test_per_level, train_per_level, self._candidate, self._query,
            shortage="; lower train_per_level/test_per_level")
        self.levels = self.streams.levels
        self.runner = ProgramRunner(timeout_s, memory_mb)

    # -- queries

    def _candidate(self, rng: random.Random, level: int) -> tuple[Any, tuple] | None:
        ops = draw_problem(rng, level)
        tests = [_draw_list(rng) for _ in range(self.tests_per_query)]
        outputs = [run_problem(ops, xs) for xs in tests]
        if len({repr(o) for o in outputs}) < 2:  # a constant answer teaches nothing
            return None
        extra = [[]] + [_draw_list(rng, negatives=True) for _ in range(self.extra_inputs - 1)]
        return ops, (ops, tests, extra)

    def _query(self, level: int, index: int, item: tuple) -> Query:
        ops, tests, extra = item
        asserts = [f"assert f({xs!r}) == {run_problem(ops, xs)!r}" for xs in tests]
        return Query(query_id=f"code-L{level}-{index:04d}", difficulty=level,
                     prompt=f"{spec_line(ops)}\n{HEADER}",
                     data={"ops": [[op.kind, op.expr] for op in ops], "tests": asserts,
                           "extra_inputs": [[xs] for xs in extra]})

    def queries(self, split: str) -> list[Query]:
        return self.streams.queries(split)

    # -- programs

    def program_of(self, query: Query, completion: str) -> str:
        return HEADER + completion

    def tests_of(self, query: Query) -> list[str]:
        return list(query.data["tests"])

    def body_offset(self, query: Query, completion: str) -> int:
        return HEADER.count("\n")

    def run_programs(self, queries: Sequence[Query], completions: Sequence[str],
                     trace: bool = False) -> list[ExecResult]:
        return run_task_programs(self, self.runner, queries, completions, trace)

    # -- reading completions

    def split_steps(self, completion: str) -> list[str]:
        return program_lines(completion)

    def extract_answer(self, completion: str) -> str | None:
        """The normalised program (two answers agree when the programs do)."""
        body = completion.strip()
        return normalise_program(HEADER + completion) if body else None

    def is_correct(self, query: Query, completion: str) -> bool:
        return self.run_programs([query], [completion])[0].passed

    def solution_key(self, steps: list[str]) -> str:
        """Two solutions are the same program when they normalise to the same text."""
        return normalise_program(HEADER + "".join(s + "\n" for s in steps))

    # -- demonstrations

    def reference_solutions(self, query: Query, k: int = 4, seed: int = 0) -> list[str]:
        """Up to `k` distinct solver programs, drawn at random among every combination of
        styles (seeded by task seed, `seed` and query id)."""
        ops = tuple(Op(kind, expr) for kind, expr in query.data["ops"])
        rng = random.Random(f"code:{self.seed}:{seed}:{query.query_id}")
        solutions = all_solutions(ops)
        return rng.sample(solutions, min(k, len(solutions)))

    def demonstrations(self, levels: Sequence[int], per_query: int = 2, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        return [Demonstration(q.prompt, completion)
                for q in self.streams.fresh(levels, extra_per_level)
                for completion in self.reference_solutions(q, k=per_query, seed=seed)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.streams.describe(),
                "tests_per_query": self.tests_per_query, "extra_inputs": self.extra_inputs}

    # -- figures

    def extra_metrics(self, *, samples: pd.DataFrame, train: pd.DataFrame, evals: pd.DataFrame,
                      test: Sequence[Query]) -> dict[str, float | None]:
        """The code figures (docs/metrics.md, "Code")."""
        queries = {q.query_id: q for q in [*self.queries("train"), *test]}
        return code_figures(self, self.runner, lambda q: behaviour_test([f"f({xs!r})" for [xs] in q.data["extra_inputs"]]),
                            samples=samples, train=train, evals=evals, queries=queries)
