"""Reading the lines of a countdown solution: a step ("7*3=21") or one nested expression
("(7*3)+2=23", read as the steps it stands for), and writing a step solution as an expression.

Two formats of one solution ("steps", "expression") are what the Echo Chamber set-up mixes in
the base model's demonstrations; the checker (`selftrain.tasks.countdown.check_steps`) reads
both under the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(-?\d+)")  # a negative claim parses, then fails


def parse_step(text: str) -> tuple[int, str, int, int] | None:
    """(a, op, b, claimed result) of a step like "7*3=21" (spaces ignored), else None."""
    m = _STEP.fullmatch(re.sub(r"\s+", "", text))
    if m is None:
        return None
    return int(m[1]), m[2], int(m[3]), int(m[4])


_TOKEN = re.compile(r"\d+|[-+*/()]")


def expression_steps(text: str) -> list[str] | None:
    """The steps a nested expression such as "(4*3)-2=10" stands for, in evaluation order
    (["4*3=12", "12-2=10"]), the last step claiming the written result; None when `text` is
    not an expression with at least two operations and a claimed result. A step's result is
    Python's (floor division for "/"), so `check_steps` names what breaks the task's rules."""
    lhs, eq, claim = re.sub(r"\s+", "", text).partition("=")
    if not eq or not re.fullmatch(r"-?\d+", claim) or "".join(_TOKEN.findall(lhs)) != lhs:
        return None
    tokens, steps = _TOKEN.findall(lhs), []

    def combine(a: int, op: str, b: int) -> int:
        r = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
        steps.append(f"{a}{op}{b}={r}")
        return r

    def operand(pos: int) -> tuple[int, int]:
        if pos < len(tokens) and tokens[pos] == "(":
            value, pos = chain(pos + 1, "+-")
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError("unbalanced parenthesis")
            return value, pos + 1
        if pos < len(tokens) and tokens[pos].isdigit():
            return int(tokens[pos]), pos + 1
        raise ValueError("operand expected")

    def chain(pos: int, ops: str) -> tuple[int, int]:
        """A left-to-right chain of `ops` ("+-": of products; "*/": of operands)."""
        value, pos = chain(pos, "*/") if ops == "+-" else operand(pos)
        while pos < len(tokens) and tokens[pos] in ops:
            right, nxt = chain(pos + 1, "*/") if ops == "+-" else operand(pos + 1)
            value, pos = combine(value, tokens[pos], right), nxt
        return value, pos

    try:
        _, end = chain(0, "+-")
    except (ValueError, IndexError):
        return None
    if end != len(tokens) or len(steps) < 2:
        return None
    steps[-1] = steps[-1].rsplit("=", 1)[0] + "=" + claim
    return steps


def expand(steps: Sequence[str]) -> tuple[list[str], list[int]]:
    """Simple steps for `steps`, each expression line replaced by its steps, and for every
    simple step the index of the line it came from."""
    out, owner = [], []
    for i, text in enumerate(steps):
        subs = expression_steps(text) if parse_step(text) is None else None
        out += subs or [text]
        owner += [i] * len(subs or [text])
    return out, owner


def as_expression(steps: Sequence[str]) -> str | None:
    """The one nested expression a step solution stands for ("7*3=21", "21+2=23" ->
    "(7*3)+2=23"), each earlier result replaced by its expression; None when the steps do not
    combine into one (an unparseable step, or a result left unused)."""
    made: dict[int, list[str]] = {}  # value -> expressions of the results not yet used
    result = None
    for step in steps:
        parsed = parse_step(step)
        if parsed is None:
            return None
        a, op, b, result = parsed
        left = made[a].pop() if made.get(a) else str(a)
        right = made[b].pop() if made.get(b) else str(b)
        made.setdefault(result, []).append(f"({left}{op}{right})")
    pending = [e for es in made.values() for e in es]
    if result is None or len(pending) != 1:
        return None
    return f"{pending[0][1:-1]}={result}"


FORMATS = ("steps", "expression")
"""The solution formats countdown accepts (`format_of`) and can write demonstrations in."""


def claimed(line: str) -> int | None:
    """The result a step or expression line claims, or None when it is neither."""
    parsed = parse_step(line)
    if parsed is not None:
        return parsed[3]
    subs = expression_steps(line)
    return None if subs is None else int(subs[-1].rsplit("=", 1)[1])


def check_formats(formats: dict[str, float] | None) -> dict[str, float] | None:
    """The mixture weights of `CountdownTask(formats=...)`, checked, as floats."""
    if formats is None:
        return None
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats or any(w < 0 for w in formats.values()) or not sum(formats.values()):
        raise ValueError(f"countdown task.args.formats must map some of {list(FORMATS)} to "
                         f"non-negative weights with a positive sum, got {formats!r}")
    return {name: float(w) for name, w in formats.items()}
