"""The sandbox against programs a policy could write. Each must end with the status that names
it, leave nothing outside its temp dir changed, reach no server, and leave no process behind;
the next program must run as if nothing happened."""

from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from selftrain.sandbox import Sandbox, execute, execute_many

LIMITS = {"timeout_s": 1.0, "memory_mb": 256}
CANARY = ("def f(xs):\n    return sorted(xs)", "assert f([3, 1, 2]) == [1, 2, 3]")


def nobody_processes() -> list[int]:
    """Live processes running as `nobody` (the programs, when the sandbox runs as root) that
    descend from this test process: other sandboxes on the machine (another test run, an
    experiment) are not this test's to count."""
    parents, nobody = {}, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in
                          Path(f"/proc/{entry}/status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(status["PPid"])
        if status["Uid"].split()[0] == "65534" and not status["State"].strip().startswith("Z"):
            nobody.append(int(entry))
    me = os.getpid()

    def mine(pid: int) -> bool:
        for _ in range(64):  # ancestry is shallow; a cycle cannot happen, the bound is a guard
            pid = parents.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid in nobody if mine(pid)]


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(parallel=2)
    yield box
    box.close()


@pytest.fixture
def run(sandbox):
    """Run one program; then check that none of its processes is left and that the next
    program (a canary) passes."""

    def go(program: str, test: str = "", **limits):
        result = execute(program, test, sandbox=sandbox, **{**LIMITS, **limits})
        if os.geteuid() == 0:
            assert nobody_processes() == [], "a process of the program outlived its result"
        assert execute(*CANARY, sandbox=sandbox, **LIMITS).status == "passed"
        return result

    return go


def tree_digest(*paths: Path) -> str:
    """Hash of names and contents of everything under `paths` (before/after comparisons)."""
    h = hashlib.sha256()
    for root in paths:
        for p in sorted(root.rglob("*")):
            h.update(str(p).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_verdicts_of_ordinary_programs(run, sandbox):
    ok = run("def add(a, b):\n    return a + b", "assert add(1, 2) == 3\nassert add(2, 2) == 4")
    assert (ok.status, ok.isolation, ok.isolation_note) == ("passed", sandbox.isolation, "")
    assert sandbox.isolation == "namespaces"
    bad = run("def add(a, b):\n    return a - b", ["assert add(0, 0) == 0", "assert add(1, 2) == 3"])
    assert (bad.status, bad.failing_test) == ("failed", "assert add(1, 2) == 3")
    err = run("def f(x):\n    y = 1\n    return x / 0", "assert f(1) == 1")
    assert (err.status, err.error_line, err.failing_test) == ("error", 3, "assert f(1) == 1")
    assert err.exception == "ZeroDivisionError: division by zero"
    syntax = run("def f(:\n  pass", "assert True")
    assert syntax.status == "error" and syntax.exception.startswith("SyntaxError")
    out = run("print('hello')\nimport sys\nprint('oops', file=sys.stderr)")
    assert out.output == "hello\noops\n"


def test_infinite_loop_times_out(run):
    result = run("while True:\n    pass", timeout_s=0.5)
    assert result.status == "timeout"
    assert 0.5 <= result.duration_s < 2.0


def test_fork_storm_is_contained(run):
    storm = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    assert run(storm, timeout_s=0.5).status == "timeout"
    crash = "import os\nwhile True:\n    os.fork()"
    assert run(crash).status in ("error", "timeout")


def test_memory_hog(run):
    assert run("x = bytearray(2 * 1024 ** 3)").status == "memory"
    grow = "xs = []\nwhile True:\n    xs.append(' ' * 10 ** 6)"
    assert run(grow).status == "memory"


def test_output_flood_is_capped(run):
    flood = run("while True:\n    print('x' * 1000)", timeout_s=0.5)
    assert flood.status == "timeout"
    big = run("print('y' * 10 ** 6)\nimport os\nos.write(1, b'z' * 10 ** 6)", "assert True",
              output_chars=100)
    assert (big.status, big.output) == ("passed", "y" * 100)


def test_files_outside_the_temp_dir_are_untouchable(run, tmp_path):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "metrics.json").write_text('{"pass@1": 0.5}')
    home_file = Path.home() / f".selftrain-sandbox-test-{uuid.uuid4().hex}"
    host_tmp = Path("/tmp") / f"selftrain-sandbox-test-{uuid.uuid4().hex}"
    home_file.write_text("home")
    host_tmp.write_text("tmp")
    try:
        before = tree_digest(run_folder) + home_file.read_text() + host_tmp.read_text()
        for target in (run_folder / "metrics.json", home_file, host_tmp):
            write = run(f"open({str(target)!r}, 'w').write('pwned')")
            delete = run(f"import os\nos.remove({str(target)!r})")
            assert delete.status == "error", delete
            # the program's /tmp is its own: a write there succeeds and the host never sees it
            assert write.status == ("passed" if target == host_tmp else "error"), write
        create = run(f"open({str(run_folder / 'new.txt')!r}, 'w').write('x')")
        assert create.status == "error"
        system = run("open('/usr/pwned', 'w').write('x')")
        assert system.status == "error"
        # its own /tmp is writable, and is not the host's
        own = run(f"open({str(host_tmp)!r} + '.own', 'w').write('mine')",
                  f"assert open({str(host_tmp)!r} + '.own').read() == 'mine'")
        assert own.status == "passed"
        assert not Path(str(host_tmp) + ".own").exists()
        after = tree_digest(run_folder) + home_file.read_text() + host_tmp.read_text()
        assert after == before
    finally:
        home_file.unlink()
        host_tmp.unlink()


def test_run_folder_is_unreadable(run, tmp_path):
    secret = tmp_path / "answers.txt"
    secret.write_text("42")
    result = run(f"answer = open({str(secret)!r}).read()", "assert answer == '42'")
    assert result.status == "error" and "FileNotFoundError" in result.exception


def test_no_network_to_a_loopback_server(run):
    connections = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    port = server.getsockname()[1]
    try:
        result = run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), "
                     "timeout=0.5)\ns.sendall(b'leak')")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.status == "error"
    assert connections == []


def test_killing_its_parent_hurts_nobody(run, sandbox):
    server_pid = sandbox.server_pid
    program = (f"import os, signal\nfor pid in [os.getppid(), 1, {server_pid}, {os.getpid()}]:\n"
               "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass")
    result = run(program, "assert True")
    assert result.status in ("passed", "error")
    assert sandbox.alive() and sandbox.server_pid == server_pid


def test_exits_before_or_inside_the_tests_are_errors(run):
    early = run("import os\nos._exit(0)", "assert False")
    assert early.status == "error" and "exited with code 0" in early.exception
    inside = run("import sys\ndef f():\n    sys.exit(0)", "assert f() == 1")
    assert (inside.status, inside.exception) == ("error", "SystemExit: 0")


def test_recursion_bomb_and_segfault(run):
    bomb = run("def f(n):\n    return f(n + 1)\nf(0)")
    assert bomb.status == "error" and bomb.exception.startswith("RecursionError")
    # the limit lifted, recursion in C code overflows the stack
    deep = run("import sys, json\nsys.setrecursionlimit(10 ** 8)\nx = []\n"
               "for _ in range(2 * 10 ** 5):\n    x = [x]\njson.dumps(x)", timeout_s=3.0)
    assert (deep.status, deep.exception) == ("error", "killed by SIGSEGV")
    segv = run("import ctypes\nctypes.string_at(0)")
    assert (segv.status, segv.exception) == ("error", "killed by SIGSEGV")


def test_a_forked_child_cannot_report_for_the_program():
    forks = "import os\nif os.fork() == 0:\n    pass\nelse:\n    raise ValueError('parent')"
    assert execute(forks, "assert True", **LIMITS).status == "error"


def test_many_at_once_in_order():
    programs = [f"def f():\n    return {i}" for i in range(40)]
    tests = [f"assert f() == {i if i % 3 else -1}" for i in range(40)]
    results = execute_many(programs, tests, **LIMITS)
    assert [r.status for r in results] == ["failed" if i % 3 == 0 else "passed" for i in range(40)]


def test_user_namespace_path():
    """The path a non-root caller takes (a user namespace, every capability dropped)."""
    box = Sandbox(parallel=2, isolation="userns")
    try:
        results = execute_many(
            ["import os\nos.mkdir('/proc/x')", "import socket\nsocket.create_connection(('1.1.1.1', 53), 0.5)",
             "import os\nos.chroot('/tmp')", "open('/tmp/own', 'w').write('x')", CANARY[0]],
            ["", "", "", "assert open('/tmp/own').read() == 'x'", CANARY[1]],
            sandbox=box, **LIMITS)
    finally:
        box.close()
    assert box.isolation == "namespaces"
    assert [r.status for r in results] == ["error", "error", "error", "passed", "passed"]
    assert "PermissionError" in results[2].exception


def test_fallback_says_so():
    box = Sandbox(parallel=2, isolation="rlimits")
    try:
        ok, loop = execute_many([CANARY[0], "while True:\n    pass"], [CANARY[1], ""],
                                sandbox=box, timeout_s=0.5, memory_mb=256)
    finally:
        box.close()
    assert (ok.status, loop.status) == ("passed", "timeout")
    assert ok.isolation == "rlimits" and "disabled" in ok.isolation_note


def test_a_dead_server_leaves_no_program_behind():
    """The caller's process dies (here: its server is killed) while a program sleeps."""
    import signal
    import time

    box = Sandbox(parallel=2)
    errors = []
    # orphans of the killed server would be re-parented to this process, so that
    # `nobody_processes` still sees them (PR_SET_CHILD_SUBREAPER)
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    # the server up first (a cold start can outlast the wait below), so the kill meets programs
    assert execute(*CANARY, sandbox=box, **LIMITS).status == "passed"

    def sleeper():
        try:
            execute_many(["import time\ntime.sleep(60)"] * 2, ["", ""], timeout_s=30,
                         memory_mb=256, sandbox=box)
        except RuntimeError as err:
            errors.append(err)

    thread = threading.Thread(target=sleeper)
    thread.start()
    deadline = time.monotonic() + 5
    while os.geteuid() == 0 and not nobody_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(box.server_pid_now(), signal.SIGKILL)
    thread.join(timeout=10)
    assert errors and "died" in str(errors[0])
    deadline = time.monotonic() + 5
    while os.geteuid() == 0 and nobody_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.geteuid() == 0:
        assert nobody_processes() == []
    assert execute(*CANARY, sandbox=box, **LIMITS).status == "passed"  # a new server starts
