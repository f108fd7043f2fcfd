"""wandb tracking (offline by default) and the per-round terminal table.

One wandb run per arm and seed, grouped by experiment, every metric logged with `round` as its
step. Everything logged also lands in the run folder (`round_<k>/metrics.json`, written by the
driver), so nothing depends on wandb being reachable.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType

from selftrain.config import Config, to_dict
from selftrain.metrics.keys import RUN_PROGRESS_KEYS, level_keys
from selftrain.terminal_tables import fitted_table

if TYPE_CHECKING:
    from selftrain.runfolder.folder import RunFolder

console = Console(width=None if sys.stdout.isatty() else 160)


class Tracker:
    """One wandb run per arm and seed. A resumed run continues the same wandb id in a fresh
    offline run folder and logs every recorded round again from the run folder (`replay`), so
    wandb holds each round exactly once even when the killed process never flushed its file;
    the older offline folders of that id move to `wandb/superseded/` (nothing is deleted)."""

    def __init__(self, cfg: Config, folder: RunFolder, label: str) -> None:
        self.run = None
        self.offline = False
        if not cfg.tracking.enabled:
            return
        import wandb

        mode = cfg.tracking.mode or os.environ.get("WANDB_MODE") or "offline"
        self.offline = mode == "offline"
        resume_id = folder.manifest.get("wandb_id")
        if resume_id and self.offline:
            _supersede(folder.path / "wandb", resume_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.tracking.project, entity=cfg.tracking.entity, group=cfg.experiment,
            job_type=label, name=f"{label}-seed{cfg.seed}", config=to_dict(cfg),
            dir=str(folder.path), mode=mode, id=resume_id,
            resume="allow" if resume_id else None,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")
        if resume_id is None:
            folder.set_meta(wandb_id=self.run.id)

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def replay(self, folder: RunFolder, base: str) -> None:
        """Log the base model and every round the run folder records as finished. Offline, the
        new run file holds nothing yet, so all of them; online, the server has what an earlier
        process sent, so only rounds after the last one it logged."""
        if self.run is None:
            return
        self.log_model("base-model", base, 0)
        after = -1 if self.offline else folder.manifest.get("wandb_logged_round", -1)
        for k in folder.recorded_rounds():
            if k > after and folder.is_done(k, "metrics"):
                ckpt = str(folder.path / f"round_{k}" / "checkpoint")
                if k > 0:  # an empty training set carried the policy over (no checkpoint)
                    ckpt = folder.stage_info(k, "finetune").get("carried_over", ckpt)
                self.log_round(k, folder.path / f"round_{k}", ckpt if k > 0 else None)

    def log_round(self, k: int, round_dir: Path, policy: str | None) -> None:
        """Round k's figures, histograms, examples (and its policy as an artifact), as the
        metrics stage wrote them to the run folder."""
        if self.run is None:
            return
        def read(name: str) -> Any:
            return json.loads((round_dir / name).read_text())

        self.log(k, read("metrics.json"))
        self.log_round_extras(k, read("histograms.json"), read("examples.json"))
        if policy is not None:
            self.log_model(f"policy-round-{k}", policy, k)

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

    def finish(self, exit_code: int = 0) -> None:
        """End the wandb run; a failed run says so (`exit_code` 1), not "finished"."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _supersede(wandb_dir: Path, run_id: str) -> None:
    """Move the earlier offline folders of `run_id` aside: the resumed run re-logs all they held."""
    old = sorted(wandb_dir.glob(f"offline-run-*-{run_id}"))
    if old:
        (wandb_dir / "superseded").mkdir(exist_ok=True)
    for path in old:
        path.rename(wandb_dir / "superseded" / path.name)


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def run_progress_table(title: str, history: dict[int, dict[str, Any]]) -> RenderableType:
    """One run's rounds so far, one row each: RUN_PROGRESS_KEYS, then the latest round's acc@L
    per level and its hardest coverage@L; fitted to the terminal (narrowing_kl, refined_share,
    train_size and the middle levels' acc@L go first; metrics.json holds them all)."""
    latest = history[max(history)] if history else {}
    accs = level_keys(latest, "acc")
    keys = RUN_PROGRESS_KEYS + accs + level_keys(latest, "coverage")[-1:]
    rows = [[str(k), *[fmt(metrics.get(key)) for key in keys]]
            for k, metrics in sorted(history.items())]
    return fitted_table(title, ["round", *keys], rows, left=0,
                        droppable=["narrowing_kl", "refined_share", "train_size", *accs[1:-1]],
                        elsewhere="round_<k>/metrics.json")
