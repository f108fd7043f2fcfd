"""What every code task shares: programs checked in the sandbox (cached), behaviour on extra
inputs, and the code figures of docs/metrics.md ("Code") from a round's parquet files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import pandas as pd

from selftrain.metrics import code as figures
from selftrain.sandbox import ExecResult, Sandbox, default_sandbox, execute_many
from selftrain.types import Query

_SEP = "\x1e"


@runtime_checkable
class ExecutableTask(Protocol):
    """A task whose completions are programs run against tests (what `code-exec` critiques)."""

    def program_of(self, query: Query, completion: str) -> str:
        """The whole program a completion makes (header, body)."""
        ...

    def tests_of(self, query: Query) -> list[str]:
        """The test statements a program must pass."""
        ...

    def body_offset(self, query: Query, completion: str) -> int:
        """Program line n is line n - body_offset of the completion (the header's lines)."""
        ...

    def run_programs(self, queries: Sequence[Query], completions: Sequence[str],
                     trace: bool = False) -> list[ExecResult]: ...


def behaviour_test(calls: Sequence[str]) -> str:
    """One test statement that prints the value of each call (`f([1, 2])`; an exception's type
    is a value) as one line: the program's behaviour vector."""
    thunks = ", ".join(f"lambda: {c}" for c in calls)
    return (f"_outs = []\nfor _c in [{thunks}]:\n    try:\n        _outs.append(repr(_c()))\n"
            "    except Exception as _e:\n        _outs.append('!' + type(_e).__name__)\n"
            f"print({_SEP!r}.join(_outs))")


class ProgramRunner:
    """The sandbox calls of a code task, with limits, and a cache of verdicts (a round checks
    the same completion more than once: samples, metrics, critic)."""

    def __init__(self, timeout_s: float, memory_mb: int, sandbox: Sandbox | None = None) -> None:
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.sandbox = sandbox
        self._cache: dict[tuple[str, str, bool], ExecResult] = {}

    def run(self, programs: Sequence[str], tests: Sequence[list[str]],
            trace: bool = False) -> list[ExecResult]:
        keys = [(p, "\n".join(t), trace) for p, t in zip(programs, tests)]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        results = execute_many([programs[i] for i in todo], [tests[i] for i in todo],
                               timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                               sandbox=self.sandbox or default_sandbox(), trace=trace)
        for i, r in zip(todo, results):
            self._cache[keys[i]] = r
        return [self._cache[k] for k in keys]


def run_task_programs(task: ExecutableTask, runner: ProgramRunner, queries: Sequence[Query],
                      completions: Sequence[str], trace: bool = False) -> list[ExecResult]:
    """`task.run_programs`: each completion's whole program run against its query's tests."""
    return runner.run([task.program_of(q, c) for q, c in zip(queries, completions)],
                      [task.tests_of(q) for q in queries], trace=trace)


def program_lines(completion: str) -> list[str]:
    """A code task's `split_steps`: the non-empty lines (indentation kept: it is part of the
    program)."""
    return [line.rstrip() for line in completion.splitlines() if line.strip()]


def behaviour_vectors(runner: ProgramRunner, programs: Sequence[str],
                      behaviour_tests: Sequence[str]) -> list[str]:
    """Each program's outputs on its query's extra inputs, as one string (a program that does
    not run at all has its status as its behaviour)."""
    results = runner.run(programs, [[t] for t in behaviour_tests])
    return [r.output if r.status == "passed" else f"!{r.status}" for r in results]


def _group_figures(prefix: str, ids: list[str], programs: list[str], vectors: list[str],
                   passing: list[bool]) -> dict[str, float | None]:
    """The three diversity figures of one frame, all programs and passing ones; the passing
    group keeps every query of the frame (none passing counts 0)."""
    out: dict[str, float | None] = {}
    for suffix, only_passing in (("", False), ("_passing", True)):
        progs: dict[str, list[str]] = {q: [] for q in ids}
        vecs: dict[str, list[str]] = {q: [] for q in ids}
        for q, program, vector, ok in zip(ids, programs, vectors, passing):
            if ok or not only_passing:
                progs[q].append(program)
                vecs[q].append(vector)
        out[f"{prefix}distinct_programs{suffix}"] = figures.distinct_programs(
            list(progs.values()), passing=only_passing)
        out[f"{prefix}ast_distinct_n{suffix}"] = figures.ast_distinct_n(list(progs.values()))
        out[f"{prefix}behaviour_classes{suffix}"] = figures.behaviour_classes(
            list(vecs.values()), passing=only_passing)
    return out


def code_figures(task: ExecutableTask, runner: ProgramRunner,
                 behaviour_test_of: Callable[[Query], str], *, samples: pd.DataFrame,
                 train: pd.DataFrame, evals: pd.DataFrame,
                 queries: dict[str, Query]) -> dict[str, float | None]:
    """The figures of docs/metrics.md "Code" for one round: on the training set (train rows)
    and the test split (`eval_`), all and passing (`_passing`; a row passes when the sandbox
    passes it), and the exec shares of first-pass samples."""
    out: dict[str, float | None] = {}
    for prefix, frame in (("", train), ("eval_", evals)):
        rows = frame[frame["query_id"].isin(queries)] if frame is not None and len(frame) else None
        ids = [] if rows is None else rows["query_id"].tolist()
        completions = [] if rows is None else rows["completion"].tolist()
        chosen = [queries[q] for q in ids]
        programs = [task.program_of(q, c) for q, c in zip(chosen, completions)]
        vectors = behaviour_vectors(runner, programs, [behaviour_test_of(q) for q in chosen])
        passing = [r.passed for r in task.run_programs(chosen, completions)]
        out.update(_group_figures(prefix, ids, programs, vectors, passing))
    first = samples[samples["origin"] == "sample"] if "origin" in samples else samples
    first = first[first["query_id"].isin(queries)]
    results = task.run_programs([queries[q] for q in first["query_id"]], first["completion"].tolist())
    out.update(figures.status_shares([r.status for r in results]))
    return out
