"""Reading run folders for the report: each run's metrics and histograms, and seed statistics.

Only the run-folder contract is read (manifest.json, config.yaml, round_<k>/metrics.json and,
when present, round_<k>/histograms.json), so a report works on finished, running, partial or
copied runs without Ray, a model or wandb.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from selftrain.metrics.keys import numeric_order

# Not a docs/metrics.md key: derived here (per seed, then averaged) for the equal-budget figure.
CUM_TOKENS = "gen_tokens_cumulative"


@dataclass
class RunMetrics:
    """One run folder's metrics and histograms, keyed by round."""

    experiment: str
    arm: str
    seed: str
    path: Path
    task: str | None
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    histograms: dict[int, dict[str, Any]] = field(default_factory=dict)
    config_changes: list[dict[str, Any]] = field(default_factory=list)
    """Resumes that changed recorded settings (--allow-config-change), from the manifest."""


@dataclass(frozen=True)
class Stat:
    """One figure of one round over the seeds that have it (std is the sample std, 0 for n=1)."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int


def metric_keys(runs: list[RunMetrics]) -> set[str]:
    """Every key any round of `runs` has (for levels and `@H`, see selftrain.metrics.keys)."""
    return {key for r in runs for m in r.metrics.values() for key in m}


def find_runs(paths: list[Path], notes: list[str]) -> list[RunMetrics]:
    """Every run folder (a folder with manifest.json) at or below `paths`, each read once.

    Walking stops at a run folder, so checkpoints and parquet files are never listed. Problems
    that should not stop a report (unreadable files, duplicate runs) are appended to `notes`.
    """
    found: dict[tuple[str, str, str], RunMetrics] = {}
    seen: set[Path] = set()
    for top in paths:
        if not top.is_dir():
            raise FileNotFoundError(f"{top} is not a folder; pass a run folder "
                                    f"(<root>/<experiment>/<arm>/seed<s>) or a folder above one")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            if "manifest.json" not in filenames:
                continue
            dirnames.clear()
            path = Path(dirpath).resolve()
            if path in seen:
                continue
            seen.add(path)
            run = _read_run(path, notes)
            if run is None:
                continue
            key = (run.experiment, run.arm, run.seed)
            if key in found:
                notes.append(f"`{path}` is experiment {key[0]!r} arm {key[1]!r} seed {key[2]} "
                             f"again (first seen at `{found[key].path}`); it is left out")
                continue
            found[key] = run
    return sorted(found.values(), key=lambda r: (r.experiment, r.arm, numeric_order(r.seed)))


def _read_run(path: Path, notes: list[str]) -> RunMetrics | None:
    manifest = _read_json(path / "manifest.json", notes)
    if manifest is None:
        return None
    # Runs that died before the driver recorded its meta still follow the folder layout.
    seed = str(manifest.get("seed", path.name.removeprefix("seed")))
    run = RunMetrics(experiment=str(manifest.get("experiment", path.parent.parent.name)),
                     arm=str(manifest.get("arm", path.parent.name)), seed=seed, path=path,
                     task=_task_name(path / "config.yaml"),
                     config_changes=list(manifest.get("config_changes", [])))
    rounds = [(int(m.group(1)), d) for d in path.iterdir()
              if d.is_dir() and (m := re.fullmatch(r"round_(\d+)", d.name))]
    for k, d in sorted(rounds):
        if (d / "metrics.json").is_file():
            metrics = _read_json(d / "metrics.json", notes)
            if metrics is not None:
                run.metrics[k] = metrics
        if (d / "histograms.json").is_file():
            hist = _read_json(d / "histograms.json", notes)
            if hist is not None:
                run.histograms[k] = hist
    total: float | None = 0.0
    for k in sorted(run.metrics):  # once a round lacks gen_tokens, the running sum is unknown
        step = _num(run.metrics[k].get("gen_tokens"))
        total = None if total is None or step is None else total + step
        run.metrics[k][CUM_TOKENS] = total
    if not run.metrics:
        notes.append(f"`{path}` has no `round_<k>/metrics.json` yet; it is left out")
        return None
    return run


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"`{path}` could not be read ({err}); it is left out")
        return None
    if not isinstance(obj, dict):
        notes.append(f"`{path}` is not a JSON object; it is left out")
        return None
    return obj


def _task_name(path: Path) -> str | None:
    try:
        task = (yaml.safe_load(path.read_text()) or {}).get("task") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return str(task["name"]) if isinstance(task, dict) and "name" in task else None


def _num(value: Any) -> float | None:
    """A finite number, or None for null, NaN, inf and non-numbers (metrics may be any of them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _stat(values: list[Any]) -> Stat | None:
    nums = np.array([v for v in map(_num, values) if v is not None])
    if not len(nums):
        return None
    std = float(nums.std(ddof=1)) if len(nums) > 1 else 0.0
    return Stat(float(nums.mean()), std, float(nums.min()), float(nums.max()), len(nums))


def series(runs: list[RunMetrics], key: str) -> dict[int, Stat]:
    """round -> `key` over the seeds in `runs` (rounds where no seed has a number are absent)."""
    out = {}
    for k in sorted({k for r in runs for k in r.metrics}):
        stat = _stat([r.metrics[k].get(key) for r in runs if k in r.metrics])
        if stat is not None:
            out[k] = stat
    return out

