"""Countdown: reach a target by combining given numbers with + - * /, one step per line.

The embedded reasoning task. It runs offline, its answers are checked exactly, an exact
solver writes demonstrations and judges every step (the oracle critic builds on
`check_steps`), and difficulty is honest: a level-n query needs all n numbers, so every
solution has exactly n-1 steps. From level 3 up most queries have several solutions (about
2, 7 and 38 on average at levels 3, 4, 5), which is what the diversity metrics measure.

Prompt:      "3 7 2 -> 23\n"
Completion:  "7*3=21\n21+2=23\n"   (the loop appends EOS)

A second solution format is accepted too: one nested expression, "(7*3)+2=23\n". The checker
reads it as the steps it stands for, in evaluation order ("7*3=21", "21+2=23"), under the same
rules (every intermediate a positive integer, exact division, each number used once), so the
two formats of one solution have one solution key; `format_of` tells them apart ("steps" or
"expression"), for the format-share figures.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from selftrain.tasks.base import Demonstration
from selftrain.tasks.countdown_lines import (
    as_expression,
    check_formats,
    claimed,
    expand,
    expression_steps,
    parse_step,
)
from selftrain.tasks.levels import LevelStreams
from selftrain.tasks.registry import register_task
from selftrain.types import Query

_SOLVE_CAP = 20_000
"""Most solutions `reference_solutions` enumerates before sampling (level 5 stays below it)."""


# ---------------------------------------------------------------- arithmetic and solver


def apply_op(a: int, op: str, b: int) -> int | None:
    """The result of `a op b`, or None when it is not a positive integer (the task's rule)."""
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0 or a % b:
            return None
        r = a // b
    else:
        raise ValueError(f"unknown operator {op!r}; expected one of + - * /")
    return r if r > 0 else None


def _combinations(a: int, b: int) -> list[tuple[str, int]]:
    """Every legal step on the pair {a, b}, written larger operand first, with its result."""
    hi, lo = max(a, b), min(a, b)
    out = []
    for op in "+-*/":
        r = apply_op(hi, op, lo)
        if r is not None:
            out.append((f"{hi}{op}{lo}={r}", r))
    return out


def _successors(ms: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(step, next sorted multiset) for every distinct pair of `ms` and every legal operation."""
    seen = set()
    for i in range(len(ms)):
        for j in range(i + 1, len(ms)):
            if (ms[i], ms[j]) in seen:  # equal values give equal steps; `ms` is sorted
                continue
            seen.add((ms[i], ms[j]))
            rest = ms[:i] + ms[i + 1 : j] + ms[j + 1 :]
            for step, r in _combinations(ms[i], ms[j]):
                yield step, tuple(sorted(rest + (r,)))


@lru_cache(maxsize=1 << 17)
def _reachable_values(ms: tuple[int, ...]) -> frozenset[int]:
    """Every number that some sequence of steps on the sorted multiset `ms` can leave in it.

    Cached per multiset rather than per (multiset, target) so one search serves every
    target: the oracle critic asks about the same few multisets over and over.
    """
    values = set(ms)
    for _, nxt in _successors(ms):
        values |= _reachable_values(nxt)
    return frozenset(values)


def reachable(numbers: Iterable[int], target: int) -> bool:
    """Whether `target` can be produced from `numbers` (any subset; already present counts)."""
    if isinstance(numbers, Counter):
        numbers = numbers.elements()
    return target in _reachable_values(tuple(sorted(numbers)))


def solve(numbers: Iterable[int], target: int, limit: int | None = None) -> list[list[str]]:
    """All step sequences (up to `limit`) whose last step produces `target`.

    Exhaustive DFS over pairs of the remaining numbers; branches from which the target is
    out of reach are cut with the memoised `reachable`. Commutative steps are written larger
    operand first, so no two solutions share a `solution_key`.
    """
    solutions: list[list[str]] = []

    def dfs(ms: tuple[int, ...], path: list[str]) -> None:
        for step, nxt in _successors(ms):
            if limit is not None and len(solutions) >= limit:
                return
            if int(step.rsplit("=", 1)[1]) == target:
                solutions.append(path + [step])
            elif len(nxt) > 1 and target in _reachable_values(nxt):
                dfs(nxt, path + [step])

    dfs(tuple(sorted(numbers)), [])
    return solutions


# ---------------------------------------------------------------- step checking


@dataclass(frozen=True)
class StepCheck:
    """The verdict on one step; the flags say which check failed, `reason` says it in words."""

    ok: bool
    parsed: bool
    arithmetic_ok: bool
    operands_available: bool
    target_reachable: bool
    reason: str
    """A short sentence naming what failed; "" when the step is ok."""


def _have(pool: Counter) -> str:
    return " ".join(map(str, sorted(pool.elements()))) or "nothing"


def _availability_problem(pool: Counter, a: int, b: int) -> str:
    if a == b:
        if pool[a] >= 2:
            return ""
        if pool[a] == 1:
            return f"{a} is used twice but only one is available (have {_have(pool)})"
        return f"{a} is not available (have {_have(pool)})"
    missing = [x for x in (a, b) if pool[x] < 1]
    if not missing:
        return ""
    if len(missing) == 2:
        return f"{a} and {b} are not available (have {_have(pool)})"
    return f"{missing[0]} is not available (have {_have(pool)})"


def _arithmetic_problem(a: int, op: str, b: int, claimed: int) -> str:
    if op == "/" and b == 0:
        return f"{a}/0 divides by zero"
    if op == "/" and a % b:
        return f"{a}/{b} is not an exact division"
    true = apply_op(a, op, b)
    if true is None:
        return f"{a}{op}{b} is not a positive number"
    if true != claimed:
        return f"{a}{op}{b}={claimed} is wrong: {a}{op}{b}={true}"
    return ""


def check_steps(numbers: Iterable[int], target: int, steps: Sequence[str]) -> list[StepCheck]:
    """One verdict per line: a step line is judged as in `_check_simple`; an expression line
    by its steps (`expression_steps`), ok when all are, else the verdict of its first bad one."""
    simple, owner = expand(steps)
    checks = _check_simple(numbers, target, simple)
    out = []
    for i in range(len(steps)):
        mine = [c for c, o in zip(checks, owner) if o == i]
        out.append(next((c for c in mine if not c.ok), mine[-1]))
    return out


def _check_simple(numbers: Iterable[int], target: int, steps: Sequence[str]) -> list[StepCheck]:
    """One verdict per step, replaying the steps on the multiset of available numbers.

    A legal step consumes its two operands and adds its result. An illegal one (unparseable,
    wrong arithmetic, unavailable operand) is not applied, so the later steps are still judged
    against a consistent state. A legal step is ok only if the target stays reachable.
    """
    pool = Counter(numbers)
    reached = False
    out = []
    for text in steps:
        parsed = parse_step(text)
        if parsed is None:
            reason = f"cannot read {text.strip()!r}: a step looks like 7*3=21"
            out.append(StepCheck(False, False, False, False, reachable(pool, target), reason))
            continue
        a, op, b, claimed = parsed
        arithmetic = _arithmetic_problem(a, op, b, claimed)
        availability = _availability_problem(pool, a, b)
        if reached:
            problems = ["target already reached"]
        else:
            problems = [p for p in (arithmetic, availability) if p]
            if not problems:  # legal: consume the operands, add the result
                pool -= Counter((a, b))
                pool[claimed] += 1
                reached = claimed == target
                if not reachable(pool, target):
                    problems.append(f"target {target} cannot be reached from {_have(pool)} anymore")
        check = StepCheck(
            ok=not problems,
            parsed=True,
            arithmetic_ok=not arithmetic,
            operands_available=not availability,
            target_reachable=reachable(pool, target),
            reason="; ".join(problems),
        )
        out.append(check)
    return out


# ---------------------------------------------------------------- query generation


def _draw(rng: random.Random, n: int, max_number: int) -> tuple[list[int], int]:
    """n random numbers and the result of combining all of them with random legal steps."""
    numbers = [rng.randint(1, max_number) for _ in range(n)]
    pool = list(numbers)
    while len(pool) > 1:
        i, j = sorted(rng.sample(range(len(pool)), 2))
        b, a = pool.pop(j), pool.pop(i)
        pool.append(rng.choice(_combinations(a, b))[1])
    return numbers, pool[0]


def _needs_all(numbers: list[int], target: int) -> bool:
    """True when no strict subset of `numbers` reaches `target` (so a solution needs n-1 steps).

    Checking each subset that drops one number suffices: `reachable` already tries all of
    their subsets.
    """
    if target in numbers:
        return False
    for x in set(numbers):
        rest = list(numbers)
        rest.remove(x)
        if reachable(rest, target):
            return False
    return True


def solution_key(steps: Iterable[str]) -> str:
    """Canonical path: whitespace dropped, operands of + and * sorted, steps joined by "|"; an
    expression line counts as the steps it stands for (so both formats of a solution match)."""
    keys = []
    for text in expand(list(steps))[0]:
        parsed = parse_step(text)
        if parsed is None:
            keys.append(re.sub(r"\s+", "", text))
            continue
        a, op, b, c = parsed
        if op in "+*":
            a, b = max(a, b), min(a, b)
        keys.append(f"{a}{op}{b}={c}")
    return "|".join(keys)


@register_task("countdown")
class CountdownTask:
    """Countdown with difficulty = number of given numbers.

    Each level has one deterministic stream of distinct queries (`LevelStreams`); a query's id
    is its position in that stream. The test split is the head of the stream, the training pool
    the next `train_per_level` queries, and demonstrations come after that.

    `formats`: mixture weights of the solution formats the base model's demonstrations are
    written in, e.g. {"steps": 0.5, "expression": 0.5} (the Echo Chamber set-up: does
    self-training keep both, or converge on one?); None writes step lines only.
    """

    name = "countdown"
    stop: tuple[str, ...] = ()

    def __init__(
        self,
        levels: Sequence[int] = (2, 3, 4, 5),
        seed: int = 0,
        train_per_level: int = 60,
        test_per_level: int = 25,
        max_number: int = 12,
        target_min: int = 10,
        target_max: int = 99,
        formats: dict[str, float] | None = None,
    ) -> None:
        if not levels or min(levels) < 2:
            raise ValueError(f"countdown levels must be at least 2 numbers each, got {levels!r}")
        if max_number < 1 or target_min > target_max:
            raise ValueError(
                f"countdown needs max_number >= 1 and target_min <= target_max, got "
                f"max_number={max_number}, target_min={target_min}, target_max={target_max}"
            )
        self.formats = check_formats(formats)
        self.seed = seed
        self.max_number = max_number
        self.target_min = target_min
        self.target_max = target_max
        self.streams = LevelStreams(
            "countdown", seed, levels, test_per_level, train_per_level, self._candidate, self._query,
            shortage=(f"with max_number={max_number} and targets {target_min}..{target_max}; "
                      f"lower train_per_level/test_per_level or widen those ranges"))
        self.levels = self.streams.levels
        self.train_per_level = train_per_level
        self.test_per_level = test_per_level

    # -- queries

    def _candidate(self, rng: random.Random, level: int) -> tuple[Any, tuple[list[int], int]] | None:
        """One candidate: kept when its target is in range and needs all `level` numbers."""
        numbers, target = _draw(rng, level, self.max_number)
        if not self.target_min <= target <= self.target_max or not _needs_all(numbers, target):
            return None
        return (tuple(sorted(numbers)), target), (numbers, target)

    def _query(self, level: int, index: int, item: tuple[list[int], int]) -> Query:
        numbers, target = item
        return Query(
            query_id=f"cd-L{level}-{index:04d}",
            difficulty=level,
            prompt=f"{' '.join(map(str, numbers))} -> {target}\n",
            data={"numbers": list(numbers), "target": target},
        )

    def queries(self, split: str) -> list[Query]:
        """The "train" pool or the "test" split: per level, a fixed slice of its stream."""
        return self.streams.queries(split)

    # -- reading completions

    def split_steps(self, completion: str) -> list[str]:
        """Non-empty lines, stripped: one step per line."""
        return [line.strip() for line in completion.splitlines() if line.strip()]

    def extract_answer(self, completion: str) -> str | None:
        """The result of the last line that reads as a step or an expression, or None."""
        for line in reversed(self.split_steps(completion)):
            result = claimed(line)
            if result is not None:
                return str(result)
        return None

    def is_correct(self, query: Query, completion: str) -> bool:
        """Every step ok, and the last one produces the target."""
        steps = self.split_steps(completion)
        if not steps:
            return False
        target = query.data["target"]
        if not all(c.ok for c in check_steps(query.data["numbers"], target, steps)):
            return False
        return claimed(steps[-1]) == target

    def format_of(self, completion: str) -> str | None:
        """"steps" (every line a step, so also any one-step answer) or "expression" (one line,
        a nested expression); None for anything else."""
        lines = self.split_steps(completion)
        if lines and all(parse_step(line) is not None for line in lines):
            return "steps"
        if len(lines) == 1 and expression_steps(lines[0]) is not None:
            return "expression"
        return None

    def solution_key(self, steps: list[str]) -> str:
        """Two solutions are the same path when they differ only in spacing or operand order."""
        return solution_key(steps)

    # -- demonstrations

    def reference_solutions(self, query: Query, k: int = 4, seed: int = 0) -> list[str]:
        """Up to `k` distinct solver solutions as completions, drawn at random among all of
        them (seeded by task seed, `seed` and query id) so demonstrations stay diverse."""
        rng = random.Random(f"countdown:{self.seed}:{seed}:{query.query_id}")
        solutions = solve(query.data["numbers"], query.data["target"], limit=_SOLVE_CAP)
        picked = rng.sample(solutions, min(k, len(solutions)))
        return ["".join(step + "\n" for step in steps) for steps in picked]

    def demonstrations(self, levels: Sequence[int], per_query: int = 2, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """Seed-SFT examples: `per_query` solutions, chosen at random with `seed`, of each of
        `extra_per_level` fresh queries per level (`LevelStreams.fresh`: a base model that
        memorised the pool would make rejection sampling look easy)."""
        rng = random.Random(f"countdown-formats:{self.seed}:{seed}")
        return [Demonstration(q.prompt, self._in_format(completion, rng))
                for q in self.streams.fresh(levels, extra_per_level)
                for completion in self.reference_solutions(q, k=per_query, seed=seed)]

    def _in_format(self, completion: str, rng: random.Random) -> str:
        """`completion` (step lines) rewritten in a format drawn from `formats`."""
        if self.formats is None:
            return completion
        names = list(self.formats)
        fmt = rng.choices(names, weights=[self.formats[n] for n in names])[0]
        expr = as_expression(self.split_steps(completion)) if fmt == "expression" else None
        return completion if expr is None else expr + "\n"

    def describe(self) -> dict[str, Any]:
        """The parameters that fix this task's queries (for config echo and run metadata)."""
        out = {"name": self.name, **self.streams.describe(), "max_number": self.max_number,
               "target_min": self.target_min, "target_max": self.target_max}
        if self.formats is not None:  # absent by default, so existing base models stay cached
            out["formats"] = dict(self.formats)
        return out

