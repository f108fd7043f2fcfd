"""A run's local Ray cluster must not outlive the run's driver.

`ray.shutdown()` stops the cluster a driver started, but a driver killed with SIGKILL runs no
clean-up: gcs_server, raylet, the dashboard and runtime-env agents and idle workers stay. So a
driver that starts a local cluster also starts a small watcher process (in its own session, so
Ctrl-C does not reach it) that waits for the driver to end and then kills every process whose
command line names the cluster's session folder, or that holds a file in it open (each Ray
process of that cluster does, and no other process does). On a normal exit it finds none and ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def watch_local_cluster(session_dir: str) -> subprocess.Popen:
    """Start the watcher of the cluster whose session folder is `session_dir`."""
    return subprocess.Popen([sys.executable, "-m", "selftrain.cluster.ray_reaper", str(os.getpid()),
                             session_dir], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)


def session_pids(session_dir: str) -> list[int]:
    """Processes of the cluster: their command line names the session folder (gcs, raylet),
    or they hold a file in it open (workers and agents, whose titles Ray rewrites, write their
    output to its logs/); its unique name suffices."""
    name = Path(session_dir).name
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if name.encode() in (proc / "cmdline").read_bytes() or _holds(proc, name):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def _holds(proc: Path, name: str) -> bool:
    for fd in (proc / "fd").iterdir():
        try:
            if name in os.readlink(fd):
                return True
        except OSError:
            continue
    return False


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet waited for by its parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def reap(session_dir: str, grace_s: float = 5.0) -> None:
    """SIGTERM the session's processes, then SIGKILL what remains after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_pids(session_dir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace_s
        while pids and time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)


def main(driver_pid: int, session_dir: str) -> None:
    while _alive(driver_pid):
        time.sleep(0.5)
    reap(session_dir)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
