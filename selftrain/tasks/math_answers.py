"""Final answers of math completions: reading them ("#### x", "\\boxed{x}", "The answer is x"),
writing them canonically, and deciding whether two state the same answer (math-verify).

Plain numbers (thousands separators, "$", trailing units and zeros dropped) are compared
exactly as fractions; anything else goes to math-verify (`parse` + `verify`) so
"\\frac{1}{2}", "1/2" and "0.5" agree. A string math-verify cannot read, or one that times out,
is simply not correct: checking never raises.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import Any

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "answer_is", "plain")
MAX_ANSWER_CHARS = 200
"""Longer extracted answers are compared as strings only: parsing them with sympy is slow and
they are almost never a real final answer (a runaway line after "The answer is")."""

_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer\s*(?:is|:)\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_RATIO = re.compile(r"[-+]?\d+/\d+")
_NUMBER_WITH_UNIT = re.compile(r"([-+]?[\d,]*\.?\d+)\s*([A-Za-z][A-Za-z .]*)")
_NOT_UNITS = {"pi", "i", "e", "sqrt"}


def _boxed(text: str) -> tuple[int, str] | None:
    """(start, content) of the last complete `\\boxed{...}` / `\\fbox{...}` (nested braces ok).

    A box cut off by max_new_tokens (no closing brace) does not count; an earlier complete one
    then does. `\\boxed 5` (no braces) reads up to the next space or `$`.
    """
    for m in reversed(list(_BOXED.finditer(text))):
        rest = text[m.end() :]
        if not rest.startswith("{"):
            token = re.match(r"[^\s$]+", rest)
            if token:
                return m.start(), token.group(0)
            continue
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                return m.start(), rest[1:i]
    return None


def _hashes(text: str) -> tuple[int, str] | None:
    found = [m for m in _HASHES.finditer(text) if m.group(1).strip()]
    return (found[-1].start(), found[-1].group(1)) if found else None


def _answer_is(text: str) -> tuple[int, str] | None:
    """(start, answer) of the last "The answer is x" / "Answer: x", x cut at its sentence end."""
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        answer = re.split(r"\.\s", m.group(1), maxsplit=1)[0]
        if answer.strip(" .$"):
            return m.start(), answer
    return None


_EXTRACTORS = {"gsm8k": _hashes, "boxed": _boxed, "answer_is": _answer_is}


def extract_final_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer written in `text`, normalized (`normalize_math_answer`), or None.

    "auto" takes whichever of "#### x", "\\boxed{x}", "The answer is x" comes last in the text
    (the model's final statement wins); a named format looks only for its own marker; "plain"
    means the text is the answer itself.
    """
    if answer_format == "plain":
        return normalize_math_answer(text) or None
    extractors = _EXTRACTORS.values() if answer_format == "auto" else [_EXTRACTORS[answer_format]]
    found = [hit for hit in (f(text) for f in extractors) if hit is not None]
    if not found:
        return None
    return normalize_math_answer(max(found, key=lambda hit: hit[0])[1]) or None


def answer_marker(text: str) -> str | None:
    """The marker that states the final answer of `text`, as "auto" reads it (the last one):
    "boxed", "answer_is" or "gsm8k" ("#### x"); None when there is none."""
    found = [(hit[0], name) for name, f in _EXTRACTORS.items() if (hit := f(text)) is not None]
    return max(found)[1] if found else None


def normalize_math_answer(answer: str) -> str:
    """Canonical text of a final answer, so equal answers are equal strings (for `maj@n`).

    Drops surrounding `$` / `\\( \\)`, escaped dollars, LaTeX thin spaces and a final period;
    a plain number loses thousands separators, trailing zeros and a trailing unit word
    ("1,000.50 dollars" -> "1000.5"). Everything else is left for math-verify.
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("\\!", "").replace("\\,", "").replace("\\%", "%")
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.strip().strip("$").strip().rstrip(".").strip()
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m and m.group(2).strip(" .").lower() not in _NOT_UNITS and len(m.group(2).strip()) > 1:
        s = m.group(1)
    number = as_number(s)
    if number is not None and "/" not in s:
        d = Decimal(number.numerator) / Decimal(number.denominator)
        return "0" if d == 0 else format(d.normalize(), "f")
    return s


def as_number(s: str) -> Fraction | None:
    """The exact value of a plain number ("1,000", "-3.50", "12.", "3/4"), else None."""
    s = s.strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        if _RATIO.fullmatch(s) and int(s.rsplit("/", 1)[1]) != 0:
            return Fraction(s)
    except (ValueError, ZeroDivisionError, InvalidOperation):
        return None
    return None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@lru_cache(maxsize=1 << 14)
def _parse(text: str, timeout_s: int | None) -> tuple[Any, ...]:
    """math-verify's reading of an answer: as LaTeX first, then as a plain expression."""
    from math_verify import parse

    found = parse(f"${text}$", parsing_timeout=timeout_s)
    return tuple(found or parse(text, parsing_timeout=timeout_s))


def answers_match(gold: str | None, pred: str | None, timeout_s: int = 3) -> bool:
    """Whether `pred` states the same answer as `gold`; never raises.

    Plain numbers are compared exactly; anything else with math-verify (gold first: its
    `verify` is not symmetric). math-verify bounds each parse and comparison with a SIGALRM
    timer, which only works in the main thread; in any other thread (a threaded actor, a test
    runner's worker thread) it runs without a timeout rather than failing, and
    `MAX_ANSWER_CHARS` keeps pathological inputs out of sympy there.
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if gold is None or pred is None:
        return False
    g, p = normalize_math_answer(gold), normalize_math_answer(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gn, pn = as_number(g), as_number(p)
    if gn is not None and pn is not None:
        return gn == pn
    if max(len(g), len(p)) > MAX_ANSWER_CHARS:
        return False
    timeout = timeout_s if _in_main_thread() else None
    try:
        gold_parsed, pred_parsed = _parse(g, timeout), _parse(p, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))
    except (Exception, TimeoutException):  # a weird string is just wrong
        return False
