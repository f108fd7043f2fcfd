"""wandb tracking (offline by default) and the per-round terminal table.

One wandb run per arm and seed, grouped by experiment, every metric logged with `round` as its
step. Everything logged also lands in the run folder (`round_<k>/metrics.json`, written by the
driver), so nothing depends on wandb being reachable.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from selftrain.config import Config, to_dict
from selftrain.metrics.keys import RUN_PROGRESS_KEYS, level_keys

console = Console(width=None if sys.stdout.isatty() else 160)


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path, arm: str, resume_id: str | None = None) -> None:
        self.run = None
        if not cfg.tracking.enabled:
            return
        import wandb

        mode = cfg.tracking.mode or os.environ.get("WANDB_MODE") or "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.tracking.project, entity=cfg.tracking.entity, group=cfg.experiment,
            job_type=arm, name=f"{arm}-seed{cfg.seed}", config=to_dict(cfg), dir=str(run_dir),
            mode=mode, id=resume_id, resume="allow" if resume_id else None,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, k: int, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        payload = {key: v for key, v in metrics.items() if v is not None}
        payload.update(extra or {})
        payload["round"] = k
        self.run.log(payload)

    def log_round_extras(self, k: int, histograms: dict[str, Any],
                         examples: list[dict[str, Any]]) -> None:
        """Histograms and an example table of round k, keyed by round so none overwrite."""
        if self.run is None:
            return
        import numpy as np
        import wandb

        length = histograms["length"]
        edges = np.asarray(length["edges"])
        per_query = histograms["correct_per_query"]
        payload: dict[str, Any] = {
            "round": k,
            "hist/length_accepted": wandb.Histogram(np_histogram=(length["completions"], edges)),
            "hist/length_reference": wandb.Histogram(np_histogram=(length["references"], edges)),
            "hist/correct_per_query": wandb.Histogram(
                np_histogram=(per_query, np.arange(len(per_query) + 1) - 0.5)),
        }
        if examples:
            columns = list(examples[0])
            payload[f"examples/round_{k}"] = wandb.Table(
                columns=columns, data=[[row[c] for c in columns] for row in examples])
        self.run.log(payload)

    def log_model(self, name: str, path: str, k: int) -> None:
        """Record a model folder as an artifact by reference (no copy of the weights)."""
        if self.run is None or not Path(path).is_dir():
            return
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata={"round": k, "path": str(path)})
        artifact.add_reference(f"file://{Path(path).resolve()}", checksum=False)
        self.run.log_artifact(artifact)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def run_progress_table(title: str, history: dict[int, dict[str, Any]]) -> Table:
    """One run's rounds so far, one row each: RUN_PROGRESS_KEYS, then the latest round's acc@L
    per level and its hardest coverage@L."""
    latest = history[max(history)] if history else {}
    keys = RUN_PROGRESS_KEYS + level_keys(latest, "acc") + level_keys(latest, "coverage")[-1:]
    table = Table(title=title, title_justify="left")
    table.add_column("round", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    for k, metrics in sorted(history.items()):
        table.add_row(str(k), *[fmt(metrics.get(key)) for key in keys])
    return table
