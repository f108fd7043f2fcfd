"""`compare --resume` of an experiment whose every run is finished: answered from the run
folders, without Ray or a model (seconds, not minutes; a comparison written again reads the
runs' tokenizer for the policy figures).

Each run is checked as `run --resume` checks a finished run (`finished_history`: every round
recorded, every recorded file intact). The comparison and report are computed from the runs'
records and the `compare` section only, so they are written again only when those changed since
they were last written: `logs/summarized.json` keeps the sha256 of what they were computed from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from selftrain.config import to_dict
from selftrain.experiments.plan import PlannedRun
from selftrain.runfolder.folder import atomic_write_json

STAMP = Path("logs") / "summarized.json"


def finished_results(runs: list[PlannedRun]) -> dict[str, dict[int, dict[int, dict[str, Any]]]] | None:
    """arm label -> seed -> round -> metrics when every run is finished and intact, else None
    (something is left to run or to redo: the full resume does it)."""
    from selftrain.loop.resume import finished_history

    results: dict[str, dict[int, dict[int, dict[str, Any]]]] = {}
    for run in runs:
        history = finished_history(run.cfg, run.folder)
        if history is None:
            return None
        results.setdefault(run.label, {})[run.seed] = history
    return results


def summary_inputs(runs: list[PlannedRun]) -> str:
    """sha256 of what comparison.json and the report are computed from: the `compare` section
    and, run by run, its name and manifest (which holds the sha256 of every file it records)."""
    digest = hashlib.sha256(json.dumps(to_dict(runs[0].cfg.compare), sort_keys=True).encode())
    for run in runs:
        digest.update(run.name.encode())
        digest.update((run.folder / "manifest.json").read_bytes())
    return digest.hexdigest()


def stamp_summary(runs: list[PlannedRun], exp_dir: Path, *, report: bool) -> None:
    """Record what the comparison (and, with `report`, the report) just written came from."""
    (exp_dir / STAMP).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(exp_dir / STAMP, {"inputs": summary_inputs(runs), "report": report})


def summary_current(runs: list[PlannedRun], exp_dir: Path, *, report: bool) -> bool:
    """The comparison (and the report, when asked for) on disk were computed from exactly these
    runs' records and `compare` section."""
    path = exp_dir / STAMP
    if not path.is_file():
        return False
    try:
        stamp = json.loads(path.read_text())
    except ValueError:
        return False
    arms = len({run.label for run in runs})
    files = ([exp_dir / "comparison.json"] if arms > 1 else []) + (
        [exp_dir / "report" / "report.md"] if report else [])
    return (stamp.get("inputs") == summary_inputs(runs) and (stamp.get("report") or not report)
            and all(f.is_file() for f in files))
