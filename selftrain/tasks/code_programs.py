"""The embedded code task's programs: pipelines of list operations in a small Python subset,
and the several ways a solver writes each step (comprehension, builtin, loop).

A problem is a list of operations on a list of small integers `xs`: filters and maps, then
one final reduction. Its level is the number of operations, so the shortest program has one
line per operation. Every operation can be written in more than one style, so a problem has
many correct programs that differ in syntax and length (what `distinct_programs` and
`ast_distinct_n` measure).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

IND = "    "


@dataclass(frozen=True)
class Op:
    """One operation: `kind` filter, map or final; `expr` the Python expression in `x` (or the
    reduction's name for a final); `spec` what the prompt says."""

    kind: str
    expr: str

    @property
    def spec(self) -> str:
        return f"if {self.expr}" if self.kind == "filter" else self.expr

    def apply(self, xs: list[int]) -> object:
        if self.kind == "filter":
            return [x for x in xs if eval(self.expr, {"x": x})]  # our own expressions only
        if self.kind == "map":
            return [eval(self.expr, {"x": x}) for x in xs]
        return FINALS[self.expr](xs)


FINALS: dict[str, Callable[[list[int]], object]] = {
    "sum": sum, "len": len, "sorted": sorted, "max": lambda xs: max(xs, default=0),
}


def _filters() -> list[str]:
    return (["x % 2 == 0", "x % 2 == 1"] + [f"x > {k}" for k in range(1, 6)]
            + [f"x < {k}" for k in range(3, 8)])


def _maps() -> list[str]:
    return ([f"x + {k}" for k in range(1, 6)] + [f"x * {k}" for k in range(2, 5)]
            + [f"x - {k}" for k in range(1, 4)] + ["x * x"])


def draw_problem(rng: random.Random, level: int) -> tuple[Op, ...]:
    """`level - 1` filters and maps (never two filters in a row), then a final."""
    ops: list[Op] = []
    for _ in range(level - 1):
        kind = "map" if ops and ops[-1].kind == "filter" else rng.choice(["filter", "map"])
        ops.append(Op(kind, rng.choice(_filters() if kind == "filter" else _maps())))
    ops.append(Op("final", rng.choice(sorted(FINALS))))
    return tuple(ops)


def run_problem(ops: tuple[Op, ...], xs: list[int]) -> object:
    value: object = list(xs)
    for op in ops:
        value = op.apply(value)  # type: ignore[arg-type]
    return value


def spec_line(ops: tuple[Op, ...]) -> str:
    return "# " + " | ".join(op.spec for op in ops)


# ---- how a solver writes each operation -------------------------------------------------

def _step_styles(op: Op) -> list[list[str]]:
    """The ways to write one filter or map step: each a list of lines."""
    if op.kind == "filter":
        return [[f"{IND}xs = [x for x in xs if {op.expr}]"],
                [f"{IND}xs = list(filter(lambda x: {op.expr}, xs))"],
                [f"{IND}ys = []", f"{IND}for x in xs:", f"{IND * 2}if {op.expr}:",
                 f"{IND * 3}ys.append(x)", f"{IND}xs = ys"]]
    return [[f"{IND}xs = [{op.expr} for x in xs]"],
            [f"{IND}xs = list(map(lambda x: {op.expr}, xs))"],
            [f"{IND}ys = []", f"{IND}for x in xs:", f"{IND * 2}ys.append({op.expr})", f"{IND}xs = ys"]]


def _final_styles(op: Op) -> list[list[str]]:
    name = op.expr
    if name == "sum":
        return [[f"{IND}return sum(xs)"],
                [f"{IND}total = 0", f"{IND}for x in xs:", f"{IND * 2}total += x", f"{IND}return total"]]
    if name == "len":
        return [[f"{IND}return len(xs)"], [f"{IND}return sum(1 for x in xs)"]]
    if name == "max":
        return [[f"{IND}return max(xs, default=0)"], [f"{IND}return max(xs) if xs else 0"]]
    return [[f"{IND}return sorted(xs)"], [f"{IND}xs.sort()", f"{IND}return xs"]]


def all_solutions(ops: tuple[Op, ...], cap: int = 200) -> list[str]:
    """Up to `cap` distinct correct bodies (every combination of styles, in a fixed order)."""
    choices = [_step_styles(op) for op in ops[:-1]] + [_final_styles(ops[-1])]
    out = []
    for combo in itertools.islice(itertools.product(*choices), cap):
        out.append("".join(line + "\n" for lines in combo for line in lines))
    return out


HEADER = "def f(xs):\n"


def program_of(body: str) -> str:
    """The whole program a completion (the function's body) makes."""
    return HEADER + body
