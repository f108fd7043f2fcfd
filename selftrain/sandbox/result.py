"""What an execution returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("passed", "failed", "timeout", "memory", "error")


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one program against its tests.

    `status`: passed (every test ran), failed (a test's assert was false), timeout (wall or CPU
    limit), memory (out of its address space), error (anything else: an exception, a crash, a
    signal, an exit before the tests finished). `isolation` says how it was run: "namespaces"
    (the full sandbox) or "rlimits" (the kernel refused namespaces; see `isolation_note`)."""

    status: str
    failing_test: str | None = None
    exception: str | None = None
    """The exception's last line, e.g. "ZeroDivisionError: division by zero"."""
    error_line: int | None = None
    """The program's line (1-based) where the exception was raised, when it was in the program."""
    trace_line: int | None = None
    """For a failed test run with tracing: the program's last line that ran before the test's
    assert failed (where the value it checked was last changed or returned)."""
    output: str = ""
    """What the program printed (stdout and stderr), capped."""
    duration_s: float = 0.0
    isolation: str = "namespaces"
    isolation_note: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
