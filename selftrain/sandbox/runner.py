"""Runs inside the sandboxed process: the program, then each test statement, with output
captured and capped; the verdict goes out as one JSON object on the result pipe.

The verdict is only as trustworthy as the process that computes it: a program runs in the same
interpreter as its tests (as in human-eval and evalplus), so one written to fool its tests (an
object equal to everything) can. The sandbox protects the host, not the grade."""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import traceback

PROGRAM, TEST = "<program>", "<test>"


class CappedOutput(io.TextIOBase):
    """stdout/stderr that keep the first `cap` characters and drop the rest (a flood of output
    costs nothing but time)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.parts, self.size = cap, [], 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
        self.size += len(s)
        return len(s)

    def text(self) -> str:
        return "".join(self.parts)


def split_tests(test: str | list[str]) -> list[str]:
    """Each top-level statement of `test` is one test (MBPP's test_list items already are)."""
    if isinstance(test, list):
        return test
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return [test]
    return [ast.get_source_segment(test, node) or "" for node in tree.body]


def _error_line(exc: BaseException) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == PROGRAM:
            line = lineno
    if isinstance(exc, SyntaxError) and exc.filename == PROGRAM:
        line = exc.lineno
    return line


def _status(exc: BaseException, in_test: bool) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    if in_test and isinstance(exc, AssertionError):
        frames = [f.f_code.co_filename for f, _ in traceback.walk_tb(exc.__traceback__)]
        return "failed" if frames and frames[-1] == TEST else "error"
    return "error"


class LineTrace:
    """The last line of the program that ran (sys.settrace on the program's frames only): for a
    failed test, the line after which the value the test saw was final."""

    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, frame, event, arg):  # sys.settrace calls it so
        if frame.f_code.co_filename != PROGRAM:
            return None
        if event == "line":
            self.last = frame.f_lineno
        return self


def run(program: str, tests: list[str], output_cap: int, trace: bool = False) -> dict:
    """The verdict of `program` against `tests` (every BaseException is caught: a SystemExit in
    a test is an error, not an exit). With `trace`, a failed verdict carries `trace_line`."""
    out = CappedOutput(output_cap)
    tracer = LineTrace()
    sys.stdout = sys.stderr = out
    namespace: dict = {"__name__": "__main__"}
    verdict: dict = {"status": "passed"}
    current: str | None = None
    try:
        exec(compile(program, PROGRAM, "exec"), namespace)
        for current in tests:
            tracer.last = None
            sys.settrace(tracer if trace else None)
            exec(compile(current, TEST, "exec"), namespace)
            sys.settrace(None)
    except BaseException as exc:  # noqa: B036 -- the program may raise anything, SystemExit too
        in_test = current is not None
        verdict = {"status": _status(exc, in_test), "failing_test": current if in_test else None,
                   "exception": traceback.format_exception_only(type(exc), exc)[-1].strip()[:500],
                   "error_line": _error_line(exc)}
        sys.settrace(None)
        if trace and verdict["status"] == "failed":
            verdict["trace_line"] = tracer.last
    verdict["output"] = out.text()
    return verdict


def report(fd: int, verdict: dict) -> None:
    data = json.dumps(verdict).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
