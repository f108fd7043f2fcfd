"""The caller's side: start the warm server once per process, send it batches, read verdicts."""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, replace

from selftrain.sandbox.isolate import Limits
from selftrain.sandbox.result import ExecResult
from selftrain.sandbox.runner import split_tests

log = logging.getLogger(__name__)
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Sandbox:
    """A warm server process and the lock that serialises batches to it. `isolation="auto"`
    uses namespaces when the kernel allows them (else falls back, logs a warning, and says so
    in every result); "rlimits" forces the fallback; "userns" takes the path of a non-root
    caller (a user namespace, capabilities dropped) even as root."""

    def __init__(self, parallel: int | None = None, isolation: str = "auto") -> None:
        self.parallel = parallel or os.cpu_count() or 1
        self.isolation_request = isolation
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.isolation = ""
        self.note = ""

    @property
    def server_pid(self) -> int:
        """The warm server's pid (started if it is not running)."""
        with self._lock:
            return self._ensure().pid

    def server_pid_now(self) -> int | None:
        """The server's pid without waiting for a batch in flight (None when not started)."""
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        code = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                "from selftrain.sandbox.server import main; main()")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, "--isolation", self.isolation_request],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        hello = json.loads(self._proc.stdout.readline() or b"{}")
        if not hello:
            raise RuntimeError("the sandbox server did not start (see its stderr above)")
        self.isolation, self.note = hello["isolation"], hello["note"]
        if self.isolation != "namespaces":
            log.warning("sandbox runs programs with rlimits only, without namespaces: %s",
                        self.note)
        atexit.register(self.close)
        return self._proc

    def run(self, programs: Sequence[str], tests: Sequence[str | list[str]],
            limits: Limits, trace: bool = False) -> list[ExecResult]:
        jobs = [{"program": p, "tests": split_tests(t), "limits": asdict(limits), "trace": trace}
                for p, t in zip(programs, tests, strict=True)]
        if not jobs:
            return []
        with self._lock:
            proc = self._ensure()
            proc.stdin.write(json.dumps({"jobs": jobs, "parallel": self.parallel}).encode() + b"\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox server died while running a batch")
        fields = set(ExecResult.__dataclass_fields__)
        return [ExecResult(**{k: v for k, v in r.items() if k in fields})
                for r in json.loads(line)]

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        self._proc = None


_default: Sandbox | None = None


def default_sandbox() -> Sandbox:
    global _default
    if _default is None:
        _default = Sandbox()
    return _default


def execute(program: str, test: str | list[str], *, timeout_s: float, memory_mb: int,
            sandbox: Sandbox | None = None, trace: bool = False, **limits: int) -> ExecResult:
    """Run `program`, then each statement of `test`, in the sandbox (one fresh process in fresh
    namespaces); other `limits` as in `Limits` (file_mb, tmp_mb, nproc, nofile, output_chars);
    `trace` records, for a failed test, the program's last line that ran (`trace_line`)."""
    return execute_many([program], [test], timeout_s=timeout_s, memory_mb=memory_mb,
                        sandbox=sandbox, trace=trace, **limits)[0]


def execute_many(programs: Sequence[str], tests: Sequence[str | list[str]], *, timeout_s: float,
                 memory_mb: int, sandbox: Sandbox | None = None, trace: bool = False,
                 **limits: int) -> list[ExecResult]:
    """`execute` for many programs at once (the server runs `sandbox.parallel` at a time)."""
    chosen = replace(Limits(), timeout_s=timeout_s, memory_mb=memory_mb, **limits)
    return (sandbox or default_sandbox()).run(programs, tests, chosen, trace=trace)
