"""The processes of one chaos trial: which is which, and what is left of them afterwards.

A trial's run starts its own local Ray cluster with its temp dir inside the trial folder, so
every process of that cluster is found through the cluster's session folder
(`selftrain.cluster.ray_reaper.session_pids`: its name on the command line, or a file in it held
open), never by a process name alone: other runs, with clusters of their own, may share the
machine. Among those processes a role is told by the title Ray gives it (`ray::RolloutWorker…`)
or by its program (gcs_server, raylet, the dashboard and runtime-env agents).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from selftrain.cluster.ray_reaper import session_pids

WORKERS = {"RolloutWorker": "rollout worker", "CriticWorker": "critic worker",
           "TrainerWorker": "training rank"}
CLUSTER = ("gcs_server", "raylet", "dashboard agent", "runtime-env agent")
TARGETS = ("driver", "rollout worker", "critic worker", "training rank", "ray cluster")


def argv(pid: int) -> list[str]:
    """The command line of `pid` (empty when it is gone or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part for part in raw.decode(errors="replace").replace("\0", " ").split(" ") if part]


def role(args: list[str]) -> str | None:
    """What a process of a run's cluster is, from its command line (None: something else)."""
    if not args:
        return None
    title = re.match(r"ray::(\w+)", args[0])
    if title:
        return WORKERS.get(title.group(1))
    program = os.path.basename(args[0])
    if program in ("gcs_server", "raylet"):
        return program
    joined = " ".join(args)
    if "dashboard/agent.py" in joined:
        return "dashboard agent"
    if "runtime_env/agent/main.py" in joined:
        return "runtime-env agent"
    return None


def sessions(ray_dir: Path) -> list[Path]:
    """The Ray session folders under a run's Ray temp dir, oldest first."""
    if not ray_dir.is_dir():
        return []
    found = []
    for p in ray_dir.glob("session_*"):
        if p.name == "session_latest":  # Ray's link to the newest one, replaced as it starts
            continue
        try:
            found.append((p.stat().st_mtime, p))
        except OSError:  # gone meanwhile
            continue
    return [p for _, p in sorted(found) if p.is_dir()]


def find(target: str, driver_pid: int, ray_dir: Path) -> int | None:
    """The pid of `target` (a role of TARGETS or CLUSTER) in the newest cluster under
    `ray_dir`, or None while there is none (Ray not up yet, the worker not started)."""
    if target == "driver":
        return driver_pid
    found = sessions(ray_dir)
    if not found:
        return None
    pids = [p for p in session_pids(str(found[-1])) if p != driver_pid]
    matching = sorted(p for p in pids if role(argv(p)) == target)
    return matching[0] if matching else None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def touching(folder: Path) -> list[int]:
    """Processes whose command line names `folder` or that hold a file under it open: a run's
    driver, its reaper and every process of its clusters (their session folders lie there)."""
    name = str(folder.resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if name in " ".join(argv(int(proc.name))) or _holds(proc, name):
                found.append(int(proc.name))
        except OSError:
            continue
    return [p for p in found if alive(p)]


def _holds(proc: Path, name: str) -> bool:
    for fd in (proc / "fd").iterdir():
        try:
            if os.readlink(fd).startswith(name):
                return True
        except OSError:
            continue
    return False


def left_behind(folder: Path, wait_s: float = 30.0) -> list[str]:
    """The processes of a trial still running `wait_s` after its last driver ended (a killed
    driver's reaper takes a few seconds), described; each is then ended, so that the next
    trial starts on a clean machine (they are this harness's own children's children)."""
    deadline = time.time() + wait_s
    while (pids := touching(folder)) and time.time() < deadline:
        time.sleep(0.5)
    described = [f"{pid} {' '.join(argv(pid))[:80]}" for pid in pids]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return described
