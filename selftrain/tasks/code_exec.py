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


def behaviour_vectors(runner: ProgramRunner, programs: Sequence[str],
                      behaviour_tests: Sequence[str]) -> list[str]:
    """Each program's outputs on its query's extra inputs, as one string (a program that does
    not run at all has its status as its behaviour)."""
    results = runner.run(programs, [[t] for t in behaviour_tests])
    return [r.output if r.status == "passed" else f"!{r.status}" for r in results]


def code_figures(task: ExecutableTask, runner: ProgramRunner,
                 behaviour_test_of: Callable[[Query], str], *, samples: pd.DataFrame,
                 train: pd.DataFrame, evals: pd.DataFrame,
                 queries: dict[str, Query]) -> dict[str, float | None]:
    """The figures of docs/metrics.md "Code" for one round: on the training set (train rows),
    the test split (`eval_`), all and passing (`_passing`), and the exec shares of first-pass
    samples."""
    out: dict[str, float | None] = {}
    for prefix, frame, passing_col in (("", train, "correct"), ("eval_", evals, "correct")):
        if frame is None or frame.empty:
            frame = pd.DataFrame({"query_id": [], "completion": [], passing_col: []})
        rows = frame[frame["query_id"].isin(queries)]
        programs = [task.program_of(queries[q], c) for q, c in zip(rows["query_id"], rows["completion"])]
        vectors = behaviour_vectors(runner, programs,
                                    [behaviour_test_of(queries[q]) for q in rows["query_id"]])
        passing = rows[passing_col].astype(bool).tolist() if passing_col in rows else [True] * len(rows)
        ids = rows["query_id"].tolist()
        group_ids = sorted(set(ids))  # the passing group keeps queries with none passing (0)
        for suffix, keep in (("", None), ("_passing", True)):
            progs = {q: [p for p, i, ok in zip(programs, ids, passing) if i == q and (keep is None or ok)]
                     for q in group_ids}
            vecs = {q: [v for v, i, ok in zip(vectors, ids, passing) if i == q and (keep is None or ok)]
                    for q in group_ids}
            is_passing = keep is not None
            out[f"{prefix}distinct_programs{suffix}"] = figures.distinct_programs(
                list(progs.values()), passing=is_passing)
            out[f"{prefix}ast_distinct_n{suffix}"] = figures.ast_distinct_n(list(progs.values()))
            out[f"{prefix}behaviour_classes{suffix}"] = figures.behaviour_classes(
                list(vecs.values()), passing=is_passing)
    first = samples[samples["origin"] == "sample"] if "origin" in samples else samples
    first = first[first["query_id"].isin(queries)]
    results = task.run_programs([queries[q] for q in first["query_id"]], first["completion"].tolist())
    out.update(figures.status_shares([r.status for r in results]))
    return out
