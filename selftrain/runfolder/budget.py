"""Where a run's folder is, and the run a budget-matched run follows (read from its folder)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from selftrain.config import Config
from selftrain.runfolder.folder import holder, read_manifest
from selftrain.runfolder.storage import storage_for


class BudgetTarget:
    """The run a budget-matched run follows: in each round it draws samples until its
    generated tokens reach the target's in the same round. The target's rounds are read from
    its run folder as they are recorded, so the two may run side by side (the follower waits
    for each of the target's rounds) or one after the other (nothing to wait for)."""

    def __init__(self, folder: str | Path, poll_s: float = 1.0) -> None:
        self.folder, self.poll_s = Path(folder).resolve(), poll_s

    def tokens(self, k: int) -> int:
        """gen_tokens of the target's round k, waiting until it is recorded."""
        manifest = self.folder / "manifest.json"
        while True:
            started = manifest.is_file()
            if started and "metrics" in read_manifest(manifest)["rounds"].get(str(k), {}):
                metrics = json.loads((self.folder / f"round_{k}" / "metrics.json").read_text())
                return int(metrics["gen_tokens"])
            if started and holder(self.folder) is None:
                raise RuntimeError(f"budget target {self.folder} stopped before its round {k}: "
                                   f"run or resume it first")
            time.sleep(self.poll_s)


def arm_dir(cfg: Config, label: str) -> Path:
    """The arm's run folder: under run_root, or its staging copy when run_root is a URI."""
    return storage_for(cfg.run_root, cfg.staging_dir).local_root / cfg.experiment / label / \
        f"seed{cfg.seed}"
