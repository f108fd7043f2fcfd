"""Faults a long run must come through: a driver killed mid-round and resumed, a rollout or
critic worker killed mid-stage, a run folder already in use, files altered after the fact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, assert_same_rounds, small_config
from wandb_files import exit_code, history, run_files

from selftrain.backends import SamplingConfig
from selftrain.cluster.groups import ActorGroup
from selftrain.cluster.workers import CriticWorker, RolloutWorker
from selftrain.config import CriticConfig, ResourceConfig, dump_yaml
from selftrain.loop import stages
from selftrain.loop.driver import run_arm
from selftrain.models.source import resolve_model
from selftrain.runfolder.folder import RunFolder, RunLockedError, verify
from selftrain.tasks import make_task

PARQUETS = ("samples.parquet", "train.parquet", "eval.parquet")


def base_model(cfg) -> str:
    return resolve_model(cfg, make_task(cfg.task.name, **cfg.task.args))


def _timed(stage):
    start = time.perf_counter()
    return stage(), time.perf_counter() - start


def _kill_worker_during(group: ActorGroup, after_s: float, stage):
    """Run `stage()` in a thread, SIGKILL the group's (single) actor `after_s` into it (half
    of an undisturbed run's time: some chunks done, one running), and return the stage's
    result once Ray has restarted the actor and redone its chunk."""
    pid = group.call_all("info")[0]["pid"]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=stage()))
    worker.start()
    time.sleep(after_s)
    assert worker.is_alive(), "the stage ended before the kill: nothing was tested"
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert group.call_all("info")[0]["pid"] != pid, "the actor was not restarted"
    return result["out"]


def test_killed_rollout_worker_loses_and_duplicates_nothing(tmp_path, ray_cluster, model_cache):
    cfg = small_config(tmp_path, model_cache)
    model = base_model(cfg)
    prompts = [q.prompt for q in make_task(cfg.task.name, **cfg.task.args).queries("train")] * 4
    params = SamplingConfig(n=2, temperature=1.0, max_new_tokens=32)
    group = ActorGroup("rollout", RolloutWorker,
                       dict(model_path=model, backend="hf", backend_args={}, num_cpus=1.0),
                       ResourceConfig(num_workers=1, num_cpus=1))
    try:
        job = stages.GenJob(prompts, params)
        reference, took = _timed(lambda: stages.run_generation(group, job, model, 8, ("faults",),
                                                               "reference"))
        out = _kill_worker_during(group, took / 2, lambda: stages.run_generation(
            group, job, model, 8, ("faults",), "with a crash"))
        texts = [[g.text for g in outs] for outs in out]
        assert len(texts) == len(prompts) and all(len(t) == 2 for t in texts)
        # chunks carry their own seeds: the redone chunk gives exactly the same samples
        assert texts == [[g.text for g in outs] for outs in reference]
    finally:
        group.shutdown()


def test_killed_critic_worker_loses_and_duplicates_nothing(tmp_path, ray_cluster, model_cache):
    """The critique stage with its worker SIGKILLed mid-stage gives the same critiques, once each."""
    from critics import CritiqueRequest

    cfg = small_config(tmp_path, model_cache)
    task = make_task(cfg.task.name, **cfg.task.args)
    requests = []
    for q in task.queries("train"):
        steps = task.split_steps(task.reference_solutions(q, k=1, seed=0)[0])
        requests.append(CritiqueRequest(f"{q.query_id}-ok", q, steps))
        requests.append(CritiqueRequest(f"{q.query_id}-bad", q, ["1 + 1 = 3", *steps[1:]]))
    group = ActorGroup("critic", CriticWorker,
                       dict(critic=CriticConfig(path="slow_critic:SlowOracle",
                                                args={"delay_s": 0.3}),
                            task=cfg.task, num_cpus=0.0),
                       ResourceConfig(num_workers=1, num_cpus=0))
    try:
        reference, took = _timed(lambda: stages.critique(group, 4, requests, "reference"))
        out = _kill_worker_during(group, took / 2, lambda: stages.critique(group, 4, requests,
                                                                           "with a crash"))
        got = [c.sample_id for c in out]
        assert got == [r.sample_id for r in requests]  # none lost, none duplicated, in order
        assert [c.row() for c in out] == [c.row() for c in reference]
        assert all(c.first_error == -1 for c in out[0::2])
        assert all(c.first_error == 0 for c in out[1::2])
    finally:
        group.shutdown()


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selftrain.cli", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_stage(folder, k: int, stage: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        manifest = folder / "manifest.json"
        if manifest.exists():
            try:
                if stage in json.loads(manifest.read_text())["rounds"].get(str(k), {}):
                    return
            except ValueError:
                pass
        if proc.poll() is not None:
            raise AssertionError(f"driver ended early:\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"stage {stage} of round {k} not reached in {timeout}s")


def test_driver_killed_mid_round_resumes_to_identical_files(tmp_path, ray_cluster, model_cache):
    """SIGKILL the driver right after round 1's finetune, resume, and compare every file with
    an uninterrupted run of the same config and seed; wandb then holds every round once."""
    ref_cfg = small_config(tmp_path / "ref", model_cache, "tracking.enabled=false")
    run_arm(ref_cfg, "rs")
    ref = tmp_path / "ref" / "runs" / ref_cfg.experiment / "rs" / "seed0"

    cfg = small_config(tmp_path / "killed", model_cache)
    config = tmp_path / "killed.yaml"
    config.write_text(dump_yaml(cfg))
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    run = tmp_path / "killed" / "runs" / cfg.experiment / "rs" / "seed0"
    proc = _run_cli(["run", str(config)], env)
    _wait_for_stage(run, 1, "finetune", proc, timeout=600)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "round_1" / "metrics.json").exists(), "killed too late to test resume"

    resumed = _run_cli(["run", "--resume", str(run)], env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert_same_rounds(run, ref, (0, 1), PARQUETS)
    assert verify(run) == []
    # what `wandb sync runs/…/wandb/offline-run-*` uploads: each round's figures exactly once
    files = run_files(run)
    assert len(files) == 1 and exit_code(files[0]) == 0
    logged = [row["round"] for row in history(files[0]) if "pass@1" in row]
    assert logged == [0, 1]
    assert list((run / "wandb" / "superseded").glob("offline-run-*"))  # the killed one, kept


def test_a_run_folder_in_use_refuses_a_second_run(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.acquire_lock()
    other = subprocess.run(
        [sys.executable, "-c", "from selftrain.runfolder.folder import RunFolder; "
                               f"RunFolder({str(tmp_path / 'run')!r}).acquire_lock()"],
        capture_output=True, text=True, cwd=REPO)
    assert other.returncode != 0 and "is in use by pid" in other.stderr
    folder.release_lock()
    # a lock left by a process that is gone is taken over ...
    lock = tmp_path / "run" / ".lock"
    lock.write_text(json.dumps({"pid": 2**22 + 7, "host": os.uname()[1]}))
    RunFolder(tmp_path / "run").acquire_lock()
    # ... but one held by a live process is not
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname()[1]}))
    with pytest.raises(RunLockedError, match="is in use by pid"):
        RunFolder(tmp_path / "run").acquire_lock()


def test_verify_names_truncated_and_altered_files(tmp_path):
    folder = RunFolder(tmp_path / "run")
    rd = folder.round_dir(0)
    (rd / "a.txt").write_text("hello world")
    (rd / "b.txt").write_text("keep me")
    folder.mark_done(0, "generate", [rd / "a.txt", rd / "b.txt"])
    assert verify(folder.path) == []
    (rd / "a.txt").write_text("hello")  # truncated
    (rd / "b.txt").write_text("keep mE")  # same size, altered
    problems = verify(folder.path)
    assert any("round_0/a.txt was truncated" in p for p in problems)
    assert any("round_0/b.txt was altered" in p for p in problems)
    out = subprocess.run([sys.executable, "-m", "selftrain.cli", "verify", str(folder.path)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 1 and "a.txt was truncated" in out.stdout


class CannotStart:
    """A worker whose constructor fails (a model that is not there)."""

    def __init__(self) -> None:
        raise RuntimeError("no model at /nowhere")

    def info(self) -> dict:
        return {}


def test_a_group_whose_workers_cannot_start_gives_its_resources_back(ray_cluster):
    """A failed run must not keep cluster resources: the next run on the cluster (the next arm
    of a compare) would wait for them and fail to schedule."""
    import ray

    before = ray.available_resources().get("CPU", 0)
    with pytest.raises(Exception, match="no model at /nowhere"):
        ActorGroup("broken", CannotStart, (), ResourceConfig(num_workers=2, num_cpus=1),
                   timeout_s=60, max_restarts=0)
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < before and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == before
