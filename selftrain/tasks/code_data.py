"""`code_data`: code problems from the user's data, in MBPP's layout (`text`, `code`,
`test_list`) or HumanEval's (`prompt`, `entry_point`, `test`, `canonical_solution`), from a
.jsonl/.json/.parquet file or `datasets.load_dataset` arguments. Programs are checked in the
sandbox, a step is a line, and behaviour classes use the calls of the tests as inputs.

MBPP:      prompt = the description and the first test in a docstring; the completion is the
           whole program; the tests are `test_list` (and `challenge_test_list` when present).
HumanEval: prompt = the signature and docstring; the completion is the body; the test is
           `test` followed by `check(<entry_point>)`.
With `model.chat_template: true` the user turn asks for a fenced code block and the program is
the first block of the answer (`user_message`, `program_of`).
Levels: `level_column`; or `policy_levels: true`, the base policy's round-0 solve rates in
`difficulty_buckets` quantile levels (as `math`); or (default) the reference program's
non-empty lines in `length_buckets` (`lines <= 3` is level 1, ...).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import replace
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
from selftrain.tasks.data import DataSplits, check_splits, load_queries, parse_level
from selftrain.tasks.math import quantile_levels
from selftrain.tasks.registry import register_task
from selftrain.types import Query

LAYOUTS = {"mbpp": ("text", "code", "test_list"),
           "humaneval": ("prompt", "entry_point", "test", "canonical_solution")}


def test_calls(tests: Sequence[str], rename: dict[str, str] | None = None) -> list[str]:
    """The calls the tests compare (`f(1, 2)` of `assert f(1, 2) == 3`): the inputs on which
    behaviour classes are told apart. `rename` maps a callee (`candidate`) to the real name."""
    calls = []
    for source in tests:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Call):
                call = node.left
                if rename and isinstance(call.func, ast.Name) and call.func.id in rename:
                    call.func.id = rename[call.func.id]
                calls.append(ast.unparse(call))
    return calls


_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", re.S)


def fenced_code(completion: str) -> tuple[str, int] | None:
    """The first fenced code block of a chat model's answer, and how many completion lines
    come before its first line; None when there is no fence."""
    m = _FENCE.search(completion)
    if m is None:
        return None
    return m.group(1), completion[: m.start(1)].count("\n")


def _lines(code: str) -> int:
    return sum(1 for line in code.splitlines() if line.strip())


@register_task("code_data")
class CodeDataTask:
    """Code problems from a dataset (see the module docstring for the layouts)."""

    name = "code_data"
    stop: tuple[str, ...] = ()

    def __init__(self, train: str | dict[str, Any], test: str | dict[str, Any],
                 layout: str = "mbpp", level_column: str | None = None,
                 length_buckets: Sequence[int] = (3, 6, 10), id_column: str | None = "task_id",
                 max_train: int | None = None, max_test: int | None = None, seed: int = 0,
                 timeout_s: float = 5.0, memory_mb: int = 512, cache_dir: str | None = None,
                 policy_levels: bool = False, difficulty_buckets: int = 3) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"code_data layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.layout = layout
        self.data = DataSplits("code_data", {"train": train, "test": test},
                               {"train": max_train, "test": max_test}, seed, cache_dir)
        self.level_column, self.id_column = level_column, id_column
        self.length_buckets = tuple(length_buckets)
        if policy_levels and level_column is not None:
            raise ValueError("code_data: set level_column or policy_levels, not both")
        self.policy_levels, self.difficulty_buckets = policy_levels, difficulty_buckets
        self.runner = ProgramRunner(timeout_s, memory_mb)
        self._splits: dict[str, list[Query]] = {}
        self._assigned: dict[str, int] = {}

    # -- loading

    def _level(self, row: dict[str, Any], reference: str, at: str) -> int:
        if self.level_column is not None:
            level = parse_level(row[self.level_column])
            if level is None:
                raise ValueError(f"{at}: column {self.level_column!r} names no level")
            return level
        lines = _lines(reference)
        return 1 + sum(lines > b for b in self.length_buckets)

    def _query(self, row: dict[str, Any], qid: str, at: str) -> Query:
        if self.layout == "mbpp":
            tests = list(row["test_list"]) + list(row.get("challenge_test_list") or [])
            prompt = f'"""\n{row["text"].strip()}\n{row["test_list"][0]}\n"""\n'
            data = {"header": "", "tests": tests, "text": row["text"].strip(),
                    "reference": row["code"].replace("\r\n", "\n"),
                    "setup": row.get("test_setup_code") or "", "calls": test_calls(tests)}
        else:
            entry = row["entry_point"]
            data = {"header": row["prompt"], "tests": [row["test"], f"check({entry})"],
                    "reference": row["canonical_solution"], "setup": "",
                    "calls": test_calls([row["test"]], {"candidate": entry})}
            prompt = row["prompt"]
        reference = data["header"] + data["reference"]
        return Query(qid, self._level(row, reference, at), prompt, data=data)

    def _load(self, split: str) -> list[Query]:
        return load_queries(self.data, split, {}, self.id_column,
                            lambda row, at, query_id: self._query(row, query_id(), at),
                            layout=(self.layout, LAYOUTS[self.layout]))

    def check(self) -> None:
        check_splits(self)

    def queries(self, split: str) -> list[Query]:
        """The split's queries, with levels from `assign_difficulty` once it has run."""
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return [replace(q, difficulty=self._assigned.get(q.query_id, q.difficulty))
                for q in self._splits[split]]

    # -- levels from the base policy (policy_levels: true)

    @property
    def needs_policy_difficulty(self) -> bool:
        return self.policy_levels

    def assign_difficulty(self, solve_rates: dict[str, float]) -> dict[str, int]:
        """Quantile levels of the base policy's solve rates (level 1 = most often solved), pool
        and test together; `queries()` returns them from now on."""
        known = {q.query_id for split in ("train", "test") for q in self.queries(split)}
        unknown = sorted(set(solve_rates) - known)
        if unknown:
            raise ValueError(f"code_data assign_difficulty: unknown query ids, e.g. {unknown[:3]}")
        levels = quantile_levels(dict(solve_rates), self.difficulty_buckets) if solve_rates else {}
        self._assigned.update(levels)
        return levels

    def set_difficulty(self, levels: dict[str, int]) -> None:
        self._assigned.update({q: int(v) for q, v in levels.items()})

    # -- programs

    def program_of(self, query: Query, completion: str) -> str:
        """The header (HumanEval's prompt) and the completion; from a chat model, the header
        and the first fenced code block (a whole function redefines the prompt's stub)."""
        fenced = fenced_code(completion)
        if fenced is None:
            return query.data["header"] + completion
        header = query.data["header"]
        return (header + "\n" if header else "") + fenced[0]

    def tests_of(self, query: Query) -> list[str]:
        setup = [query.data["setup"]] if query.data["setup"] else []
        return setup + list(query.data["tests"])

    def body_offset(self, query: Query, completion: str) -> int:
        """Program line n is completion line n - body_offset."""
        header = query.data["header"].count("\n")
        fenced = fenced_code(completion)
        if fenced is None:
            return header
        return (header + 1 if header else 0) - fenced[1]

    def user_message(self, query: Query) -> str:
        """The instruct policy's user turn (`model.chat_template: true`): the task and its
        tests, the answer asked for in a fenced code block."""
        if query.data["header"]:
            return ("Complete this Python function. Answer with the whole function in one "
                    f"```python code block.\n\n```python\n{query.data['header']}```")
        tests = "\n".join(query.data["tests"][:3])
        return (f"{query.data['text']}\nYour code should pass these tests:\n{tests}\n"
                "Answer with the Python code in one ```python code block.")

    def run_programs(self, queries: Sequence[Query], completions: Sequence[str],
                     trace: bool = False) -> list[ExecResult]:
        return run_task_programs(self, self.runner, queries, completions, trace)

    # -- completions

    def split_steps(self, completion: str) -> list[str]:
        return program_lines(completion)

    def extract_answer(self, completion: str) -> str | None:
        return normalise_program(completion) if completion.strip() else None

    def is_correct(self, query: Query, completion: str) -> bool:
        return self.run_programs([query], [completion])[0].passed

    def solution_key(self, steps: list[str]) -> str:
        return normalise_program("".join(s + "\n" for s in steps))

    def reference_solutions(self, query: Query) -> list[str]:
        return [query.data["reference"].rstrip("\n") + "\n"]

    def demonstrations(self, levels: Sequence[int], per_query: int = 1, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """(prompt, reference) of training queries of `levels` (a dataset has no spare rows)."""
        del per_query, seed
        taken: dict[int, int] = {}
        demos = []
        for q in self.queries("train"):
            if q.difficulty in levels and (extra_per_level is None
                                           or taken.get(q.difficulty, 0) < extra_per_level):
                taken[q.difficulty] = taken.get(q.difficulty, 0) + 1
                demos.extend(Demonstration(q.prompt, r) for r in self.reference_solutions(q))
        return demos

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "sources": self.data.sources,
                "limits": self.data.limits, "seed": self.data.seed,
                "level_column": self.level_column, "length_buckets": list(self.length_buckets),
                "policy_levels": self.policy_levels, "difficulty_buckets": self.difficulty_buckets}

    def extra_metrics(self, *, samples: pd.DataFrame, train: pd.DataFrame, evals: pd.DataFrame,
                      test: Sequence[Query]) -> dict[str, float | None]:
        queries = {q.query_id: q for q in [*self.queries("train"), *test]}
        return code_figures(self, self.runner, lambda q: behaviour_test(q.data["calls"]),
                            samples=samples, train=train, evals=evals, queries=queries)
