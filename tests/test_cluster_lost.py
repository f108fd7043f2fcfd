"""A run whose own local Ray cluster ends under it (found by `make chaos`: its gcs_server
SIGKILLed) says so in one line with the command that continues it, at once, instead of hanging
60 s in Ray's wait for the GCS and ending with Ray's C++ log line, exit 1 and no resume hint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from chaos import env, write_config  # noqa: E402
from chaos_procs import find, left_behind  # noqa: E402

from selftrain.cluster.cluster_watch import dead_core  # noqa: E402
from selftrain.runfolder.folder import verify  # noqa: E402


class _Proc:
    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code


class _Info:
    def __init__(self, code):
        self.process = _Proc(code)


def test_dead_core_names_the_first_core_process_that_ended():
    class Node:
        all_processes = {"gcs_server": [_Info(None)], "raylet": [_Info(-9)],
                         "dashboard_agent": [_Info(-9)]}

    assert dead_core(Node()) == "raylet"
    Node.all_processes["raylet"] = [_Info(None)]
    assert dead_core(Node()) is None  # an agent alone: the raylet takes it down with it
    assert dead_core(object()) is None  # a cluster the run only joined: nothing to watch


@pytest.mark.slow
def test_a_run_whose_gcs_server_dies_says_how_to_continue_at_once():
    out = Path(tempfile.mkdtemp(prefix="gcs-", dir="/tmp"))  # Ray's socket paths stay short
    try:
        config, meta = write_config(out, rounds=0)
        run = out / meta["experiment"] / meta["label"] / "seed0"
        proc = subprocess.Popen(
            [sys.executable, "-m", "selftrain", "run", str(config), f"run_root={out}",
             "critic.name=null", "critic.path=slow_critic:SlowOracle", "critic.args={delay_s: 120}"],
            cwd=REPO, env=env() | {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not (run / "round_0" / "samples.parquet").exists():  # the critic is now at work
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        gcs = find("gcs_server", proc.pid, out / ".ray")
        assert gcs is not None, "no gcs_server of the run's own cluster found"
        os.kill(gcs, signal.SIGKILL)
        killed = time.time()
        stdout, stderr = proc.communicate(timeout=300)
        took = time.time() - killed
        assert proc.returncode == 1, stdout[-2000:] + stderr[-2000:]
        assert took < 30, f"{took:.0f} s after the kill (Ray alone gives up after 60 s)"
        assert stderr.strip().splitlines()[-2:] == [
            "error: the run's local Ray cluster stopped (its gcs_server process ended); the "
            "stages recorded so far are kept", f"  to continue: selftrain run --resume {run}"]
        assert "Traceback" not in stdout + stderr
        assert verify(run) == []
        assert left_behind(out) == []  # the reaper ended the rest of the cluster
    finally:
        shutil.rmtree(out, ignore_errors=True)
