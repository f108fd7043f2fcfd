"""What a run costs beyond its stages, and what answering a finished experiment costs
(`make bench`, after the loop benchmark).

A sequential `selftrain compare` of 4 tiny runs (the demo's config: arms rs and critique, seeds
0 and 1, one round, 4 pool and 2 test queries per level, the demo's base model, wandb offline),
as a user runs it (a subprocess); then `selftrain compare --resume` on the finished experiment.

- `run_overhead_s`: a run's wall time (the compare's `logs/minutes.json`, part `arm <label>
  seed <s>`) minus the sum of its stages' seconds (its manifest: every stage of every round);
  the median over the runs (each run's figure in `startup.runs`);
- `finished_resume_s`: wall time of `selftrain compare --resume <experiment>`; the record says
  whether it answered from the run folders (`answered_from_records`) and whether it started a
  Ray cluster (`ray_started`: a new session folder in the run root's `.ray`).

Both go into `<out>/benchmark.json` (added to what the loop benchmark wrote there) and the
printed table.

    .venv/bin/python scripts/bench_startup.py [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "countdown_compare.yaml"
EXPERIMENT = "bench-startup"


def overrides(out: Path, model: str) -> list[str]:
    """4 tiny runs of the demo's compare: 2 arms x 2 seeds, one round."""
    return ["rounds=1", "seeds=[0,1]", "arms={rs: {arm.name: rs}, critique: {arm.name: critique}}",
            f"run_root={out}", f"experiment={EXPERIMENT}", f"model.path={model}",
            "task.args={seed: 0, levels: [2, 3, 4], train_per_level: 4, test_per_level: 2}",
            "refine.attempts=2", "metrics.disabled=[embed_div]", "ray.num_cpus=4"]


def stage_seconds(manifest: dict[str, Any]) -> float:
    """Seconds of every recorded stage of every round."""
    return sum(info.get("seconds", 0.0) for stages in manifest["rounds"].values()
               for info in stages.values())


def run_overheads(minutes: dict[str, float],
                  manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per run (`<label> seed <s>`): its wall time, its stages' seconds and the difference."""
    out = {}
    for name, manifest in manifests.items():
        wall, stages = minutes[f"arm {name}"], stage_seconds(manifest)
        out[name] = {"wall_s": round(wall, 3), "stages_s": round(stages, 3),
                     "overhead_s": round(wall - stages, 3)}
    return out


def summary(runs: dict[str, dict[str, float]], resume: dict[str, Any]) -> dict[str, Any]:
    """The two headline figures: the median run overhead, the finished resume's wall time."""
    return {"run_overhead_s": statistics.median(r["overhead_s"] for r in runs.values()),
            "finished_resume_s": resume["seconds"]}


def _selftrain(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE=os.environ.get("WANDB_MODE",
                                                                           "offline"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "selftrain", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"selftrain {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done


def measure(out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_loop import demo_base_model

    exp = out / EXPERIMENT
    compare_s, _ = _selftrain(["compare", str(CONFIG), *overrides(out, demo_base_model()),
                               "--overwrite"])
    minutes = json.loads((exp / "logs" / "minutes.json").read_text())
    manifests = {f"{m.parent.parent.name} seed {m.parent.name.removeprefix('seed')}":
                 json.loads(m.read_text()) for m in sorted(exp.glob("*/seed*/manifest.json"))}
    sessions = set((out / ".ray").glob("session_2*"))
    resume_s, done = _selftrain(["compare", "--resume", str(exp)])
    resume = {"seconds": round(resume_s, 3),
              "answered_from_records": "nothing to run" in done.stdout,
              "ray_started": set((out / ".ray").glob("session_2*")) != sessions}
    runs = run_overheads(minutes, manifests)
    return summary(runs, resume) | {"startup": {
        "compare_s": round(compare_s, 3), "runs": runs, "minutes": minutes,
        "finished_resume": resume, "command": f"selftrain compare {CONFIG.name} "
                                              + " ".join(overrides(out, "<demo model>"))}}


def table(result: dict[str, Any]) -> Table:
    t = Table(title="start-up: a run's seconds beyond its stages (sequential compare of 4 runs)",
              title_justify="left")
    for col, justify in (("figure", "left"), ("seconds", "right"), ("goal", "right")):
        t.add_column(col, justify=justify)
    t.add_row("run_overhead_s (median)", f"{result['run_overhead_s']:.2f}", "≤ 5")
    for name, r in result["startup"]["runs"].items():
        t.add_row(f"  {name}: wall {r['wall_s']:.1f} − stages {r['stages_s']:.1f}",
                  f"{r['overhead_s']:.2f}", "")
    resume = result["startup"]["finished_resume"]
    t.add_row(f"finished_resume_s (from records: {resume['answered_from_records']}, Ray "
              f"started: {resume['ray_started']})", f"{result['finished_resume_s']:.2f}", "≤ 5")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench")
    out = Path(ap.parse_args().out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = measure(out)
    path = out / "benchmark.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(merged | result, indent=2) + "\n")
    Console().print(table(result))
    print(f"written {path}")


if __name__ == "__main__":
    sys.exit(main())
