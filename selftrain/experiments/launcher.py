"""A compare's runs side by side: each arm x seed as a `selftrain run` process on one Ray cluster.

Processes, not threads: each run keeps its own wandb run, log file and torch threads, exactly as
when it runs alone, so the files are the same as a sequential compare's. The runs join the
cluster this process started (or connected to); as many go at once as `compare.max_concurrent`
allows and the cluster can place (each run holds its rollout, critic and trainer groups for its
whole life). A budget-matched run starts after its target and waits for each of the target's
rounds. The terminal shows one status line per run; each run's own output goes to
`<experiment>/logs/<arm>-seed<s>.log`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import ray
from rich.live import Live
from rich.table import Table

from selftrain.arms.arm import Arm
from selftrain.cluster.ray_start import start_ray
from selftrain.config import Config, dump_yaml
from selftrain.experiments.plan import PlannedRun, started
from selftrain.runfolder.folder import RunFolder, read_manifest
from selftrain.tracking import console


class RunsFailed(RuntimeError):
    """Some runs of a compare failed; the others finished."""

    def __init__(self, failed: list[tuple[str, int, Path]], exp_dir: Path) -> None:
        self.failed, self.exp_dir = failed, exp_dir
        names = ", ".join(f"{name} (exit {code}, output in {log})" for name, code, log in failed)
        super().__init__(f"{len(failed)} run(s) failed: {names}")


def run_side_by_side(cfg: Config, runs: list[PlannedRun], exp_dir: Path, *, resume: bool,
                     overwrite: bool) -> None:
    start_ray(cfg, exp_dir.parent / ".ray")
    limit = concurrency(cfg, runs)
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address,
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    (exp_dir / "logs").mkdir(exist_ok=True)
    pending, active, status = list(runs), {}, {r.name: "waiting" for r in runs}
    failed: list[tuple[str, int, Path]] = []
    with _Board(status) as board:
        while pending or active:
            while pending and len(active) < limit:
                run = pending.pop(0)
                log = exp_dir / "logs" / f"{run.label}-seed{run.seed}.log"
                cmd = _command(run, exp_dir, resume=resume and started(run), overwrite=overwrite)
                with open(log, "w") as out:
                    active[run.name] = (run, subprocess.Popen(cmd, env=env, stdout=out,
                                                              stderr=subprocess.STDOUT), log)
            for name, (run, proc, log) in list(active.items()):
                code = proc.poll()
                status[name] = _progress(run.folder) if code is None else (
                    "done" if code == 0 else f"failed (exit {code})")
                if code is not None:
                    del active[name]
                    if code:
                        failed.append((name, code, log))
            board.update()
            time.sleep(1.0)
    if failed:
        raise RunsFailed(failed, exp_dir)


def concurrency(cfg: Config, runs: list[PlannedRun]) -> int:
    """compare.max_concurrent, or fewer when the cluster cannot place that many runs' groups."""
    need = {kind: max(_need(r.cfg)[kind] for r in runs) for kind in ("CPU", "GPU")}
    have = ray.cluster_resources()
    fits = min((math.floor(have.get(k, 0.0) / v) for k, v in need.items() if v > 0),
               default=len(runs))
    limit = max(1, min(cfg.compare.max_concurrent, fits, len(runs)))
    if limit < min(cfg.compare.max_concurrent, len(runs)):
        console.print(f"[yellow]{limit} run(s) at once: the cluster has {have.get('CPU', 0):g} "
                      f"CPUs and {have.get('GPU', 0):g} GPUs, a run takes {need['CPU']:g} and "
                      f"{need['GPU']:g}[/]", soft_wrap=True)
    return limit


def _need(c: Config) -> dict[str, float]:
    """CPUs and GPUs one run's groups hold for its whole life."""
    groups = [c.rollout.resources, c.train.resources]
    if Arm.of(c.arm).needs_critic:
        groups.append(c.critic.resources)
    return {"CPU": sum(g.num_workers * g.num_cpus for g in groups),
            "GPU": sum(g.num_workers * g.num_gpus for g in groups)}


def _command(run: PlannedRun, exp_dir: Path, *, resume: bool, overwrite: bool) -> list[str]:
    cmd = [sys.executable, "-m", "selftrain.cli", "run"]
    if resume:
        cmd += ["--resume", str(run.folder)]
    else:
        config = exp_dir / "logs" / f"{run.label}-seed{run.seed}.yaml"
        config.write_text(dump_yaml(run.cfg))
        cmd += [str(config), "--label", run.label] + (["--overwrite"] if overwrite else [])
    target = run.target_folder
    return cmd + (["--budget-from", str(target)] if target is not None else [])


def _progress(folder: Path) -> str:
    """`round k: <last stage>` from the run's manifest."""
    path = RunFolder(folder).manifest_path
    if not path.is_file():
        return "starting"
    try:
        rounds = read_manifest(path)["rounds"]
    except ValueError:
        return "running"
    done = [(int(k), list(stages)[-1]) for k, stages in rounds.items() if stages]
    if not done:
        return "starting"
    k, stage = max(done)
    return f"round {k}: {stage} done"


class _Board:
    """One status line per run: a live table on a terminal, a plain line per change in a file."""

    def __init__(self, status: dict[str, str]) -> None:
        self.status, self.shown = status, dict(status)
        self.live = Live(self._table(), console=console, transient=False,
                         auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> _Board:
        if self.live is not None:
            self.live.start()
        return self

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            return
        for name, state in self.status.items():
            if self.shown.get(name) != state:
                console.print(f"  {name}: {state}", highlight=False, soft_wrap=True)
        self.shown = dict(self.status)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def _table(self) -> Table:
        table = Table(title="runs", title_justify="left")
        table.add_column("run")
        table.add_column("status")
        for name, state in self.status.items():
            table.add_row(name, state)
        return table
