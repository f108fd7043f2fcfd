"""A compare's plan: every arm for every seed as a `PlannedRun`, budget-matched runs after their
targets. Shared by the sequential compare and the side-by-side launcher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selftrain.config import Config, ConfigError, apply_overrides
from selftrain.runfolder.budget import arm_dir
from selftrain.runfolder.storage import storage_for


@dataclass(frozen=True)
class PlannedRun:
    """One arm for one seed."""

    label: str
    cfg: Config
    target: str | None = None
    """The label of the run it is budget-matched to (same seed), if any."""

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def folder(self) -> Path:
        return arm_dir(self.cfg, self.label)

    @property
    def name(self) -> str:
        return f"{self.label} seed {self.seed}"

    @property
    def target_folder(self) -> Path | None:
        """The run folder of its budget target: same experiment and seed, the target's label."""
        return arm_dir(self.cfg, self.target) if self.target else None


def arm_configs(cfg: Config) -> dict[str, Config]:
    """label -> the arm's full config (shared sections + its overrides), budget-matched last."""
    if not cfg.arms:
        return {cfg.arm.name: cfg}
    shared = apply_overrides(cfg, {"arms": {}}, "compare")
    arms = {label: apply_overrides(shared, overrides, f"arms.{label}")
            for label, overrides in cfg.arms.items()}
    for label, arm in arms.items():
        target = arm.arm.budget_match
        if target is not None and target not in arms:
            raise ValueError(f"arms.{label}.arm.budget_match names {target!r}, which is not an arm "
                             f"(arms: {', '.join(arms)})")
    return dict(sorted(arms.items(), key=lambda kv: kv[1].arm.budget_match is not None))


def plan(cfg: Config) -> list[PlannedRun]:
    """Every arm for every seed, seed by seed; a budget-matched run after its target."""
    arms = arm_configs(cfg)
    if len(arms) > 1 and cfg.compare.baseline not in arms:
        raise ConfigError(f"compare.baseline {cfg.compare.baseline!r} is not an arm (arms: "
                          f"{', '.join(arms)}); set compare.baseline to the arm to compare with")
    for pair in cfg.compare.pairs:
        if len(pair) != 2 or any(a not in arms for a in pair):
            raise ConfigError(f"compare.pairs entry {pair!r} is not [arm, reference] of two arms "
                              f"(arms: {', '.join(arms)})")
    runs = []
    for seed in cfg.seeds or [cfg.seed]:
        for label, arm in arms.items():
            runs.append(PlannedRun(label, apply_overrides(arm, {"seed": seed, "seeds": None},
                                                          f"arms.{label} seed {seed}"),
                                   arm.arm.budget_match))
    return runs


def started(run: PlannedRun) -> bool:
    """Whether the run has begun (its manifest exists, here or in object storage)."""
    manifest = run.folder / "manifest.json"
    return manifest.exists() or storage_for(run.cfg.run_root, run.cfg.staging_dir).exists(manifest)
