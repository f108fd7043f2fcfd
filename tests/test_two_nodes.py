"""A real two-node Ray cluster on loopback: a head and a second node, each with its own temp dir.
One job whose rollout workers and two training ranks are spread over both nodes (Ray's own
records, the state API, must show work on both), and a compare of 2 arms x 2 seeds whose runs
go side by side and give the same files as one after the other. Only the processes this test
started are stopped."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import REPO, SMALL_OVERRIDES, SMALL_TASK

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_processes(temp_dir: Path) -> list[psutil.Process]:
    """Processes of the cluster whose temp dir is `temp_dir`, and nothing else."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    out = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"ray start {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"


@pytest.fixture()
def two_nodes():
    # Short temp dirs: Ray's unix sockets live under them and a socket path may not exceed
    # 107 bytes, which pytest's tmp_path easily does.
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="st2n-", dir="/tmp"))
    head_tmp, node_tmp = root / "h", root / "n"
    env = dict(os.environ, RAY_AUTH_MODE="disabled",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    env.pop("RAY_ADDRESS", None)
    try:
        _ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    f"--temp-dir={head_tmp}", "--num-cpus=3", "--include-dashboard=false",
                    "--disable-usage-stats"], env)
        _ray_start([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1",
                    f"--temp-dir={node_tmp}", "--num-cpus=3", "--disable-usage-stats"], env)
        yield f"127.0.0.1:{port}", env
    finally:
        # stop only what this test started, also after a failed start left processes behind
        for temp in (node_tmp, head_tmp):
            procs = ray_processes(temp)
            for p in procs:
                p.terminate()
            _, alive = psutil.wait_procs(procs, timeout=15)
            for p in alive:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


def small(tmp_path: Path, model_cache: Path, address: str, *extra: str) -> list[str]:
    return SMALL_OVERRIDES + [
        f"run_root={tmp_path / 'runs'}", f"model.cache_dir={model_cache}",
        f"task.args={json.dumps(SMALL_TASK)}", f"ray.address={address}", "tracking.enabled=false",
        *extra]


def test_a_compare_runs_arms_and_seeds_side_by_side_with_the_same_files(tmp_path, two_nodes,
                                                                          model_cache):
    address, env = two_nodes
    arms = 'arms={rs: {arm.name: rs}, critique: {arm.name: critique}}'
    for name, concurrent in (("in_turn", 1), ("side_by_side", 3)):
        done = subprocess.run(
            [sys.executable, "-m", "selftrain.cli", "compare",
             str(REPO / "configs" / "countdown_compare.yaml"),
             *small(tmp_path / name, model_cache, address, arms, "seeds=[0, 1]",
                    f"compare.max_concurrent={concurrent}", "experiment=sweep")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    side = tmp_path / "side_by_side" / "runs" / "sweep"
    assert "critique seed 1: done" in done.stdout  # one status line per run
    assert (side / "comparison.json").is_file() and (side / "report" / "report.md").is_file()
    spans = {}
    for arm in ("rs", "critique"):
        for seed in (0, 1):
            run = Path(arm) / f"seed{seed}"
            for k in (0, 1):
                for name in ("samples.parquet", "train.parquet", "eval.parquet"):
                    want = tmp_path / "in_turn" / "runs" / "sweep" / run / f"round_{k}" / name
                    got = side / run / f"round_{k}" / name
                    assert got.read_bytes() == want.read_bytes(), got
            stages = json.loads((side / run / "manifest.json").read_text())["rounds"]
            # each stage's own clock (epoch seconds): the `finished` stamps have 1 s resolution,
            # too coarse for runs of a few seconds
            entries = [e for s in stages.values() for e in s.values() if "started" in e]
            spans[str(run)] = (min(e["started"] for e in entries),
                               max(e["started"] + e["seconds"] for e in entries))
    overlapping = [(a, b) for a in spans for b in spans
                   if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    assert overlapping, f"no two runs were in progress at once: {spans}"


def test_one_job_runs_on_both_nodes(tmp_path, two_nodes, model_cache):
    address, env = two_nodes
    overrides = SMALL_OVERRIDES + [
        f"run_root={tmp_path / 'runs'}", f"model.cache_dir={model_cache}",
        f"task.args={json.dumps(SMALL_TASK)}", f"ray.address={address}", "tracking.enabled=false",
        "rollout.resources.num_workers=2", "rollout.resources.placement_strategy=STRICT_SPREAD",
        "train.resources.num_workers=2", "train.resources.placement_strategy=STRICT_SPREAD",
        "experiment=two_nodes",
    ]
    run = subprocess.run([sys.executable, "-m", "selftrain.cli", "run",
                          str(REPO / "configs" / "countdown_rs.yaml"), *overrides],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # Ray's own records: where did the rollout workers and the Ray Train workers live?
    probe = subprocess.run([sys.executable, "-c", f"""
import json, ray
from ray._private.state import actors as actor_table  # the GCS actor table (no dashboard)
ray.init(address={address!r}, log_to_driver=False)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
table = actor_table().values()
print(json.dumps({{"nodes": nodes,
                   "actors": [[a["ActorClassName"], a["Address"]["NodeID"]] for a in table]}}))
"""], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    records = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(records["nodes"]) == 2
    rollout_nodes = {n for cls, n in records["actors"] if cls == "RolloutWorker"}
    train_nodes = {n for cls, n in records["actors"] if cls == "TrainerWorker"}
    assert rollout_nodes == set(records["nodes"])
    assert train_nodes == set(records["nodes"])
    manifest = json.loads((tmp_path / "runs" / "two_nodes" / "rs" / "seed0" /
                           "manifest.json").read_text())
    ranks = manifest["rounds"]["1"]["finetune"]["workers"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["node"] for r in ranks} == set(records["nodes"])
