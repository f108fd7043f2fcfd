"""`selftrain compare`: several arms on the same base model, pools, test split and seeds."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from selftrain.checks import preflight
from selftrain.config import Config, apply_overrides, dump_yaml
from selftrain.loop import run_arm
from selftrain.metrics.keys import ARM_TABLE_KEYS, resolve_key
from selftrain.run import arm_dir
from selftrain.runfolder import atomic_write_bytes
from selftrain.storage import storage_for
from selftrain.tracking import console, fmt


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


def _started(cfg: Config, label: str) -> bool:
    manifest = arm_dir(cfg, label) / "manifest.json"
    return manifest.exists() or storage_for(cfg.run_root, cfg.staging_dir).exists(manifest)


def run_compare(cfg: Config, *, resume: bool = False, overwrite: bool = False,
                report: bool = True) -> dict[str, dict[int, dict[str, Any]]]:
    arms = arm_configs(cfg)
    for label, arm in arms.items():
        preflight(arm, f"arms.{label}")
    storage = storage_for(cfg.run_root, cfg.staging_dir)
    exp_dir = storage.local_root / cfg.experiment
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(exp_dir / "compare.yaml", dump_yaml(cfg).encode())
    storage.upload(exp_dir / "compare.yaml")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for label, arm in arms.items():
        console.rule(f"[bold]{cfg.experiment}: arm {label}")
        budget = None
        if arm.arm.budget_match:
            budget = {k: int(m["gen_tokens"]) for k, m in results[arm.arm.budget_match].items()}
        # --resume continues the arms that started; an arm the interrupted run never reached
        # starts now.
        results[label] = run_arm(arm, label, resume=resume and _started(arm, label),
                                 overwrite=overwrite, budget=budget)
    for k in sorted(next(iter(results.values()))):
        console.print(arms_round_table(cfg.experiment, k, {a: r[k] for a, r in results.items()}))
    if report:
        from selftrain.report import write_report

        path = write_report([exp_dir], exp_dir / "report")
        storage.upload(exp_dir / "report")
        console.print(f"report: {path}")
    return results


def arms_round_table(experiment: str, k: int, per_arm: dict[str, dict[str, Any]]) -> Table:
    """Round k of every arm, one row each, over ARM_TABLE_KEYS (`@H`: each arm's hardest level)."""
    table = Table(title=f"{experiment} · round {k}", title_justify="left")
    table.add_column("arm")
    for key in ARM_TABLE_KEYS:
        table.add_column(key, justify="right")
    for arm, m in per_arm.items():
        table.add_row(arm, *[fmt(m.get(resolve_key(key, m))) for key in ARM_TABLE_KEYS])
    return table
