"""A run's local Ray cluster must not outlive the run's driver.

`ray.shutdown()` stops the cluster a driver started, but a driver killed with SIGKILL runs no
clean-up: gcs_server, raylet, the dashboard and runtime-env agents and idle workers stay. So a
driver that starts a local cluster also starts a small watcher process (in its own session, so
Ctrl-C does not reach it) that waits for the driver to end and then kills every process whose
command line names the cluster's session folder, or that holds a file in it open (each Ray
process of that cluster does, and no other process does). On a normal exit it finds none and ends.

The watcher starts before `ray.init`, so a driver killed while the cluster starts leaves nothing
either (found by `make chaos`): it knows the Ray temp folder, and the driver's sessions are the
folders there whose name ends in the driver's pid (`session_<date>_<time>_<us>_<pid>`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def watch_local_cluster(temp_dir: str | Path) -> subprocess.Popen:
    """Start the watcher of the clusters this process starts with Ray's temp folder `temp_dir`
    (call it before `ray.init`)."""
    return subprocess.Popen([sys.executable, "-m", "selftrain.cluster.ray_reaper", str(os.getpid()),
                             str(temp_dir)], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)


def driver_sessions(temp_dir: str | Path, driver_pid: int) -> list[str]:
    """The session folders of the clusters `driver_pid` started under `temp_dir`."""
    root = Path(temp_dir)
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.glob(f"session_*_{driver_pid}")
                  if p.is_dir() and not p.is_symlink())


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


def main(driver_pid: int, temp_dir: str) -> None:
    while _alive(driver_pid):
        time.sleep(0.5)
    for session_dir in driver_sessions(temp_dir, driver_pid):
        reap(session_dir)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
