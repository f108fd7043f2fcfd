"""The warm parent: a small process that forks one sandboxed child per program, several at
once, and never runs a program itself. It talks to its client (selftrain.sandbox.client) over
stdin/stdout, one JSON line per batch each way.

Per program, two processes: C, forked from the server, enters new namespaces and forks P, pid 1
of the new pid namespace, which builds the read-only root, drops privileges, sets rlimits and
runs the program. Killing P at the deadline ends the whole pid namespace (the kernel kills every
process in it), and the server is the child subreaper, so it can wait until P is gone before it
answers: no process of a program outlives its result.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field

from selftrain.sandbox import isolate, runner

_FD_RESULT = 3
WARM_MODULES = ("bisect", "collections", "copy", "functools", "heapq", "itertools", "math",
                "operator", "random", "re", "statistics", "string", "typing")
"""Imported once by the server, so a program's `import math` costs nothing (and works in the
fallback as `nobody` even where the standard library lies under a private home)."""
_MAX_VERDICT = 1 << 20


@dataclass
class Running:
    """One program in flight, as the server sees it."""

    pid: int
    rfd: int | None
    cfd: int | None
    deadline: float
    started: float
    workdir: str | None
    prog_pid: int | None = None
    buf: bytearray = field(default_factory=bytearray)
    status: int | None = None
    timed_out: bool = False


class Server:
    def __init__(self, mode: str, user_namespace: bool) -> None:
        self.mode = mode
        self.note = ""
        self.root = os.geteuid() == 0
        self.user_namespace = user_namespace
        self.mountpoint = tempfile.mkdtemp(prefix="selftrain-sandbox-")
        self.stdlib = isolate.stdlib_dirs()
        self.exited: dict[int, int] = {}
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)

    # ---- the child side -------------------------------------------------------------------
    def _child(self, job: dict, wfd: int, cfd: int) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        # When the server dies, so does C, and with C, P (the kernel clears this setting when
        # credentials change, so P sets it again after dropping privileges).
        isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
        limits = isolate.Limits(**job["limits"])
        if self.mode == "rlimits":
            if self.root:
                isolate.drop_privileges(as_root=True)
                isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
            self._program(job, limits, wfd)
        try:
            isolate.enter_namespaces(user=self.user_namespace)
        except OSError as exc:
            runner.report(wfd, {"status": "error", "setup_error": f"namespaces: {exc}"})
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
                isolate.build_root(self.mountpoint, limits.tmp_mb)
                isolate.drop_privileges(as_root=not self.user_namespace)
                isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
            except OSError as exc:
                runner.report(wfd, {"status": "error", "setup_error": f"sandbox root: {exc}"})
                os._exit(0)
            self._program(job, limits, wfd)
        os.write(cfd, f"{pid}\n".encode())
        os.close(wfd)
        _, status = os.waitpid(pid, 0)
        os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))

    def _program(self, job: dict, limits: isolate.Limits, wfd: int) -> None:
        """The program's own process: bare fds (stdin closed to /dev/null, only the result pipe
        kept), the standard library as its only import path, rlimits, then the run."""
        if job.get("workdir"):
            os.chdir(job["workdir"])
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.dup2(wfd, _FD_RESULT)
        os.closerange(_FD_RESULT + 1, 1 << 16)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        sys.path[:] = self.stdlib
        isolate.set_rlimits(limits)
        me = os.getpid()
        verdict = runner.run(job["program"], job["tests"], limits.output_chars,
                             trace=bool(job.get("trace")))
        if os.getpid() == me:  # a child the program forked does not speak for it
            runner.report(_FD_RESULT, verdict)
        os._exit(0)

    # ---- the server side ------------------------------------------------------------------
    def start(self, job: dict) -> Running:
        rfd, wfd = os.pipe()
        cfd_r, cfd_w = os.pipe()
        workdir = tempfile.mkdtemp(prefix="job-") if self.mode == "rlimits" else None
        if workdir and self.root:
            os.chown(workdir, isolate.NOBODY, isolate.NOBODY)
        job = {**job, "workdir": workdir}
        now = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(rfd)
                os.close(cfd_r)
                self._child(job, wfd, cfd_w)
            finally:
                os._exit(70)
        os.close(wfd)
        os.close(cfd_w)
        if self.mode == "rlimits":
            os.close(cfd_r)
            cfd_r = None
        return Running(pid, rfd, cfd_r, now + job["limits"]["timeout_s"], now, workdir)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = status

    def _read(self, fds: list[int], running: dict[int, Running], timeout: float) -> None:
        ready, _, _ = select.select([*fds, self.wake_r], [], [], max(timeout, 0.0))
        for r in running.values():
            for fd in (r.rfd, r.cfd):
                if fd is None or fd not in ready:
                    continue
                data = os.read(fd, 1 << 16)
                if fd == r.cfd:
                    r.prog_pid = int(data) if data.strip() else None
                    os.close(fd)
                    r.cfd = None
                elif data:
                    if len(r.buf) < _MAX_VERDICT:
                        r.buf += data
                else:
                    os.close(fd)
                    r.rfd = None
        if self.wake_r in ready:
            os.read(self.wake_r, 4096)

    def _kill(self, r: Running) -> None:
        try:
            if self.mode == "rlimits":
                os.killpg(r.pid, signal.SIGKILL)
            else:
                if r.prog_pid:
                    os.kill(r.prog_pid, signal.SIGKILL)
                os.kill(r.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _finished(self, r: Running) -> bool:
        if r.pid in self.exited and r.status is None:
            r.status = self.exited.pop(r.pid)
        if r.status is None or r.rfd is not None or r.cfd is not None:
            return False
        if r.prog_pid is not None:
            if r.prog_pid in self.exited:
                self.exited.pop(r.prog_pid)
            elif _alive(r.prog_pid):
                return False
        return True

    def run_batch(self, jobs: list[dict], parallel: int) -> list[dict]:
        pending = deque(enumerate(jobs))
        running: dict[int, Running] = {}
        results: list[dict] = [{}] * len(jobs)
        while pending or running:
            while pending and len(running) < parallel:
                i, job = pending.popleft()
                running[i] = self.start(job)
            fds = [fd for r in running.values() for fd in (r.rfd, r.cfd) if fd is not None]
            nearest = min(r.deadline for r in running.values() if not r.timed_out) \
                if any(not r.timed_out for r in running.values()) else time.monotonic() + 0.05
            self._read(fds, running, min(nearest - time.monotonic(), 0.05))
            self._reap()
            now = time.monotonic()
            for i, r in list(running.items()):
                if now >= r.deadline and not r.timed_out and not self._finished(r):
                    r.timed_out = True
                    self._kill(r)
                if self._finished(r):
                    if self.mode == "rlimits":
                        self._kill(r)  # what is left of its process group
                        shutil.rmtree(r.workdir, ignore_errors=True)
                    results[i] = self._verdict(r, now)
                    del running[i]
        return results

    def _verdict(self, r: Running, now: float) -> dict:
        base = {"duration_s": round(now - r.started, 4), "isolation": self.mode,
                "isolation_note": self.note}
        if r.timed_out:
            return {**base, "status": "timeout", "exception": "killed at the wall-clock deadline"}
        try:
            verdict = json.loads(bytes(r.buf))
            if isinstance(verdict, dict) and verdict.get("status"):
                return {**base, **verdict}
        except ValueError:
            pass
        return {**base, **_death(r.status or 0, self.mode)}

    def probe(self) -> None:
        """Run one trivial program in the full sandbox; when it fails, fall back to rlimits
        only and keep the reason (every result then carries it)."""
        if self.mode == "rlimits":
            self.note = "namespaces disabled by configuration"
            return
        job = {"program": "x = 1", "tests": ["assert x == 1"], "limits": vars(isolate.Limits())}
        verdict = self.run_batch([job], 1)[0]
        if verdict.get("status") != "passed":
            self.mode = "rlimits"
            self.note = "kernel refused the namespace sandbox: " + str(
                verdict.get("setup_error") or verdict.get("exception"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _death(status: int, mode: str) -> dict:
    """A process that ended without a verdict: how it ended."""
    if mode != "rlimits":  # C's exit code carries P's end: 128 + signal, or P's exit code
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        sig = code - 128 if code > 128 else None
    else:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if sig == signal.SIGXCPU:
        return {"status": "timeout", "exception": "CPU time limit (SIGXCPU)"}
    if sig is not None:
        return {"status": "error", "exception": f"killed by {signal.Signals(sig).name}"}
    return {"status": "error", "exception": f"exited with code {code} before the tests finished"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--isolation", choices=("auto", "userns", "rlimits"), default="auto",
                        help="userns: a user namespace even when root (the non-root path)")
    args = parser.parse_args()
    isolate.prctl(isolate.PR_SET_PDEATHSIG, signal.SIGKILL)
    isolate.prctl(isolate.PR_SET_CHILD_SUBREAPER, 1)
    for name in WARM_MODULES:
        importlib.import_module(name)
    server = Server("rlimits" if args.isolation == "rlimits" else "namespaces",
                    user_namespace=args.isolation == "userns" or os.geteuid() != 0)
    out = sys.stdout.buffer
    try:
        server.probe()
        out.write(json.dumps({"isolation": server.mode, "note": server.note}).encode() + b"\n")
        out.flush()
        for line in sys.stdin.buffer:
            request = json.loads(line)
            results = server.run_batch(request["jobs"], int(request["parallel"]))
            out.write(json.dumps(results).encode() + b"\n")
            out.flush()
    finally:
        os.rmdir(server.mountpoint)


if __name__ == "__main__":
    main()
