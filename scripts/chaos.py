"""Chaos trials (`make chaos`): SIGKILL one process of a small critique-arm run at a random
moment, carry on as a user would, and check the run ends as if nothing had happened.

A reference run first: countdown on the demo's embedded tiny model with the oracle critic, as
small as still exercises every stage (round 0 and `--rounds` more, a few queries, two samples
each). Then each trial starts the same run in a folder of its own, waits a random moment
(seeded; recorded) and SIGKILLs a random one of: the driver, the rollout worker, the critic
worker, the training rank, or one of the run's own Ray cluster processes (gcs_server, raylet,
the dashboard agent, the runtime-env agent; found through the cluster's session folder, never
by name alone). What follows:

- the driver died (killed, or its cluster with it): `selftrain run --resume DIR`;
- the run exited with an error: its message must say how to continue, which is then done;
- otherwise the run recovers on its own (Ray restarts the worker, the trainer its ranks).

Checks: every parquet file and every round's metrics.json (but `time/*`) equal the reference's,
`selftrain verify` clean, one offline wandb run holding each round once (exit code 0), and no
process of the run left 30 s after its driver ended (a killed driver's cluster is ended by
selftrain/cluster/ray_reaper.py). It prints trials passed / run and writes `chaos.md` (a table:
trial, what was killed, when, outcome, wall time) to the output folder.

    .venv/bin/python scripts/chaos.py [--trials 20] [--seed 0] [--rounds 1] [--out runs/chaos]
                                      [--only 6,10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this tree's selftrain, also under an installed one

from chaos_checks import check_run  # noqa: E402
from chaos_procs import CLUSTER, TARGETS, alive, find, left_behind  # noqa: E402

STAGES = ("generate", "critique", "refine", "filter", "evaluate", "metrics")


@dataclass
class Trial:
    """One trial's plan (drawn from its seed) and what became of it."""

    index: int
    target: str
    after: tuple[int, str] | None
    """The stage whose record starts the clock (None: the driver's start)."""
    delay_s: float
    """Seconds after that to strike (later if the target is not up yet)."""
    pid: int | None = None
    killed_s: float | None = None
    phase: str = ""
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.pid is not None and not self.problems


def write_config(out: Path, rounds: int) -> tuple[Path, dict]:
    """The trials' config (countdown, the demo's tiny model, the oracle critic, small)."""
    sys.path.insert(0, str(REPO))
    from selftrain.cli import default_label
    from selftrain.config import dump_yaml, load_config
    from selftrain.models.source import resolve_model
    from selftrain.tasks import make_task

    demo = load_config(REPO / "configs" / "countdown_rs.yaml",
                       [f"model.cache_dir={out / 'models'}"])
    model = resolve_model(demo, make_task(demo.task.name, **demo.task.args))  # the shipped one
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml", [
        "experiment=chaos", f"rounds={rounds}", f"model.path={model}",
        "task.args={seed: 0, levels: [2, 3, 4], train_per_level: 20, test_per_level: 8}",
        "arm.name=critique", "critic.name=countdown-oracle",
        "critic.resources={num_workers: 1, num_cpus: 0}", "refine.attempts=2",
        "rollout.num_samples=4", "eval.num_samples=4", "eval.pass_k=[1,4]", "train.epochs=2",
        "ray.num_cpus=4", "metrics.disabled=[embed_div]", "tracking.mode=offline"])
    path = out / "chaos.yaml"
    path.write_text(dump_yaml(cfg))
    return path, {"label": default_label(cfg), "experiment": cfg.experiment, "rounds": rounds}


def env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "WANDB_SERVICE")}
    return keep | {"PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                   "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "selftrain", *args], cwd=REPO, env=env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """The driver's exit code, or None when it hung past `timeout_s` (then it is killed)."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def phase(run: Path, rounds: int) -> str:
    """Where the run is, from its manifest: `round k · stage` of the stage now running."""
    try:
        done = json.loads((run / "manifest.json").read_text()).get("rounds", {})
    except (OSError, ValueError):
        return "start-up"
    if not done:
        return "start-up"
    k = max(int(r) for r in done)
    order = (("finetune",) if k else ()) + STAGES
    stage = next((s for s in order if s not in done[str(k)]), None)
    if stage is None:
        return "end" if k >= rounds else f"round {k + 1} · finetune"
    return f"round {k} · {stage}"


def recorded(run: Path, stage: tuple[int, str]) -> bool:
    try:
        done = json.loads((run / "manifest.json").read_text()).get("rounds", {})
    except (OSError, ValueError):
        return False
    return stage[1] in done.get(str(stage[0]), {})


def strike(trial: Trial, proc: subprocess.Popen, folder: Path, run: Path, rounds: int) -> None:
    """Wait for the trial's moment, then SIGKILL its target (as soon as it is up). The target's
    pid is looked up while waiting, so the kill itself is not late by a scan of /proc."""
    start = time.time()
    clock, pid, looked = start if trial.after is None else None, None, 0.0
    while proc.poll() is None:
        now = time.time()
        if clock is None and recorded(run, trial.after):
            clock = now
        if pid is None and now - looked > 0.5:
            pid, looked = find(trial.target, proc.pid, folder / ".ray"), now
        late = trial.after is None and recorded(run, (0, "generate"))  # this start-up was quicker
        if clock is not None and (now - clock >= trial.delay_s or late):
            if pid is None or not alive(pid):
                pid = find(trial.target, proc.pid, folder / ".ray")
            if pid is not None and alive(pid):
                trial.phase = phase(run, rounds)
                os.kill(pid, signal.SIGKILL)
                trial.pid, trial.killed_s = pid, time.time() - start
                return
        time.sleep(0.01)
    trial.problems.append(f"the run ended (exit {proc.returncode}) before the {trial.target} "
                          f"was killed: nothing was tested")


def carry_on(trial: Trial, code: int | None, proc_log: Path, folder: Path, run: Path,
             config: Path, timeout_s: float) -> int | None:
    """What a user does after the kill, until the run ends with exit 0 (at most 3 times);
    the last exit code."""
    for attempt in range(2, 5):
        if code == 0:
            return code
        if code is None:
            trial.problems.append(f"{proc_log.name}: hung for {timeout_s:.0f} s (killed)")
        said = proc_log.read_text(errors="replace")
        again = "run the same command again" in said
        if code is not None and code > 0 and "selftrain run --resume" not in said and not again:
            trial.problems.append(f"{proc_log.name}: exit {code} without saying how to "
                                  f"continue: {said.strip()[-200:]!r}")
        resumable = (run / "config.yaml").is_file() and not again
        proc_log = folder / f"driver-{attempt}.log"
        args = ["run", "--resume", str(run)] if resumable else ["run", str(config),
                                                                 f"run_root={folder}"]
        code = finish(launch(args, proc_log), timeout_s)
        trial.steps.append(f"{'resumed' if resumable else 'ran again'}: {_ended(code)}")
    if code != 0:
        trial.problems.append(f"still not finished after 3 continuations ({_ended(code)})")
    return code


def _ended(code: int | None) -> str:
    if code is None:
        return "hung"
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def run_trial(trial: Trial, out: Path, config: Path, meta: dict, ref: Path,
              ref_wall: float) -> Trial:
    folder = out / f"t{trial.index:02d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run = folder / meta["experiment"] / meta["label"] / "seed0"
    timeout_s = max(300.0, 4 * ref_wall)
    started = time.time()
    log = folder / "driver-1.log"
    proc = launch(["run", str(config), f"run_root={folder}"], log)
    strike(trial, proc, folder, run, meta["rounds"])
    code = finish(proc, timeout_s)
    trial.steps.append(_ended(code) + (" (recovered)" if code == 0 else ""))
    code = carry_on(trial, code, log, folder, run, config, timeout_s)
    left = left_behind(folder)
    if left:
        trial.problems.append(f"left running: {left}")
    if code == 0:
        trial.problems += check_run(run, ref, meta["rounds"])
    trial.wall_s = time.time() - started
    return trial


def plan(n: int, seed: int, timeline: list[tuple[int, str, float, float]]) -> list[Trial]:
    """Each trial's target and moment, from its own seeded generator: a quarter of them in the
    start-up (before round 0's first stage), the others at a random point of a random stage of
    the reference run's `timeline` ((round, stage, start s, seconds) in order)."""
    trials = []
    for i in range(n):
        rng = random.Random(seed * 100_003 + i)
        target = rng.choice(TARGETS)
        if target == "ray cluster":
            target = rng.choice(CLUSTER)
        j = rng.randrange(len(timeline)) if rng.random() >= 0.25 else None
        if j is None:
            after, delay = None, rng.uniform(0.0, timeline[0][2])
        elif j == 0:
            after, delay = None, timeline[0][2] + rng.uniform(0.0, timeline[0][3])
        else:
            after, delay = timeline[j - 1][:2], rng.uniform(0.0, timeline[j][3])
        trials.append(Trial(i, target, after, round(delay, 2)))
    return trials


def stage_timeline(run: Path, launched: float) -> list[tuple[int, str, float, float]]:
    """(round, stage, start s after the driver's launch, seconds) of every recorded stage."""
    rounds = json.loads((run / "manifest.json").read_text())["rounds"]
    stages = [(int(k), name, rec["started"] - launched, rec["seconds"])
              for k, recs in rounds.items() for name, rec in recs.items()]
    return sorted(stages, key=lambda s: s[2])


def reference(out: Path, config: Path, meta: dict) -> tuple[Path, float, list]:
    """The undisturbed run every trial is compared with, its wall time and stage timeline."""
    folder = out / "ref"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run = folder / meta["experiment"] / meta["label"] / "seed0"
    start = time.time()
    code = finish(launch(["run", str(config), f"run_root={folder}"], folder / "driver-1.log"),
                  1800)
    wall = time.time() - start
    problems = ([f"exit {code}: see {folder / 'driver-1.log'}"] if code != 0 else
                left_behind(folder) + check_run(run, run, meta["rounds"]))
    if problems:
        raise SystemExit(f"the reference run failed: {problems}")
    return run, wall, stage_timeline(run, start)


def table(trials: list[Trial], seed: int, wall_s: float, ref_wall: float) -> str:
    passed = sum(t.passed for t in trials)
    lines = [f"# Chaos trials: {passed}/{len(trials)} passed", "",
             f"seed {seed}; reference run {ref_wall:.0f} s; all trials {wall_s / 60:.1f} min "
             f"(wall)", "",
             "| trial | killed | when | outcome | result | wall |",
             "|---|---|---|---|---|---|"]
    for t in trials:
        killed = f"{t.target} (pid {t.pid})" if t.pid else f"{t.target} (not killed)"
        when = f"{t.phase}, {t.killed_s:.1f} s" if t.killed_s is not None else "–"
        result = "pass" if t.passed else "FAIL: " + "; ".join(t.problems).replace("|", "/")
        lines.append(f"| {t.index} | {killed} | {when} | {' → '.join(t.steps)} | {result} | "
                     f"{t.wall_s:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds after round 0")
    parser.add_argument("--out", default=str(REPO / "runs" / "chaos"))
    parser.add_argument("--only", help="run only these trials of the plan, e.g. 6,10 (a rerun "
                                       "of failed ones after a fix)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config, meta = write_config(out, args.rounds)
    ref, ref_wall, timeline = reference(out, config, meta)
    print(f"reference run: {ref_wall:.0f} s ({ref})", flush=True)
    started, trials = time.time(), []
    only = {int(i) for i in args.only.split(",")} if args.only else None
    for trial in plan(args.trials, args.seed, timeline):
        if only is not None and trial.index not in only:
            continue
        trials.append(run_trial(trial, out, config, meta, ref, ref_wall))
        t = trials[-1]
        print(f"trial {t.index}: {t.target} at {t.killed_s or 0:.1f} s ({t.phase}): "
              f"{' → '.join(t.steps)}: {'pass' if t.passed else t.problems} "
              f"[{t.wall_s:.0f} s]", flush=True)
    text = table(trials, args.seed, time.time() - started, ref_wall)
    (out / "chaos.md").write_text(text)
    passed = sum(t.passed for t in trials)
    print(f"chaos: {passed}/{len(trials)} trials passed in {(time.time() - started) / 60:.1f} "
          f"min; table: {out / 'chaos.md'}")
    return 0 if passed == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
