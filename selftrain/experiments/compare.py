"""`selftrain compare`: several arms, for one or more seeds, on the same base model, pool and
test split; then the arms' differences with bootstrap intervals, and the report.

Every arm x seed is one run, in its own run folder, with its own wandb run. A budget-matched
run follows its own seed's target run round by round (`BudgetTarget`). With
`compare.max_concurrent: 1` the runs go one after the other in this process, each taking over
the actor groups of the run before when they were built alike (`selftrain.cluster.pool`, reset
to a fresh start's state: the same files as fresh groups give); above 1 they go
side by side as `selftrain run` processes on the same Ray cluster (`selftrain.experiments.launcher`),
which gives the same files, since every chunk of work carries its own seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import RenderableType

from selftrain.config import Config, dump_yaml
from selftrain.experiments.finished import finished_results, stamp_summary, summary_current
from selftrain.experiments.minutes import Minutes
from selftrain.experiments.plan import PlannedRun, arm_configs, plan, started
from selftrain.loop.checks import preflight
from selftrain.metrics.keys import (
    ARM_TABLE_KEYS,
    COUNT_KEYS,
    PATHS_QUERIES,
    over_queries,
    resolve_key,
)
from selftrain.runfolder.budget import BudgetTarget
from selftrain.runfolder.folder import atomic_write_bytes, atomic_write_json
from selftrain.runfolder.storage import storage_for
from selftrain.terminal_tables import fitted_table
from selftrain.tracking import console, fmt

Results = dict[str, dict[int, dict[int, dict[str, Any]]]]
"""arm label -> seed -> round -> metrics."""


def run_compare(cfg: Config, *, resume: bool = False, overwrite: bool = False,
                report: bool = True) -> Results:
    """Run (or resume) every planned run, then compare the arms and write the report."""
    runs = plan(cfg)
    if resume and (results := finished_results(runs)) is not None:
        _answer_finished(cfg, runs, results, report=report)
        return results
    for label, arm in arm_configs(cfg).items():
        preflight(arm, f"arms.{label}")
    storage = storage_for(cfg.run_root, cfg.staging_dir)
    exp_dir = storage.local_root / cfg.experiment
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(exp_dir / "compare.yaml", dump_yaml(cfg).encode())
    storage.upload(exp_dir / "compare.yaml")
    minutes = Minutes()
    with minutes.part("base model (build or cache)"):
        _base_model(runs[0].cfg)
    if cfg.compare.max_concurrent > 1 and len(runs) > 1:
        from selftrain.experiments.launcher import run_side_by_side

        with minutes.part("arms, side by side"):
            run_side_by_side(cfg, runs, exp_dir, resume=resume, overwrite=overwrite)
    else:
        _run_in_turn(runs, resume=resume, overwrite=overwrite, minutes=minutes)
    results = read_results(runs)
    for k in sorted({k for seeds in results.values() for h in seeds.values() for k in h}):
        console.print(arms_round_table(cfg.experiment, k, results))
    with minutes.part("comparison and report"):
        summarize(cfg, runs, exp_dir, report=report)
        stamp_summary(runs, exp_dir, report=report)
    console.print(minutes.table(f"{cfg.experiment}: where the time went"))
    minutes.write(exp_dir / "logs" / "minutes.json")
    return results


def _answer_finished(cfg: Config, runs: list[PlannedRun], results: Results, *,
                     report: bool) -> None:
    """Every run is finished and intact: the arms' round tables from their records, and the
    comparison and report written again only when a record changed since they were written."""
    exp_dir = storage_for(cfg.run_root, cfg.staging_dir).local_root / cfg.experiment
    for k in range(cfg.rounds + 1):
        console.print(arms_round_table(cfg.experiment, k, results))
    console.print(f"{exp_dir}: all {len(runs)} runs are recorded; nothing to run (extend them "
                  f"with rounds=N)", highlight=False, soft_wrap=True)
    if summary_current(runs, exp_dir, report=report):
        console.print(f"comparison and report are up to date with the runs: "
                      f"{exp_dir / ('report/report.md' if report else 'comparison.json')}",
                      highlight=False, soft_wrap=True)
        return
    summarize(cfg, runs, exp_dir, report=report)
    stamp_summary(runs, exp_dir, report=report)


def _base_model(cfg: Config) -> None:
    """Build (or copy the shipped) embedded base model once, before any arm starts, so its
    time is its own line and side-by-side runs never build it concurrently."""
    if cfg.model.path is None:
        from selftrain.models.source import resolve_model
        from selftrain.tasks import build_task

        resolve_model(cfg, build_task(cfg.task.name, cfg.task.path, cfg.task.args))


def _run_in_turn(runs: list[PlannedRun], *, resume: bool, overwrite: bool,
                 minutes: Minutes) -> None:
    from selftrain.cluster.pool import GroupPool
    from selftrain.loop.driver import run_arm

    pool = GroupPool()  # each run takes over the groups of the run before that fit it
    try:
        for run in runs:
            console.rule(f"[bold]{run.cfg.experiment}: arm {run.label}, seed {run.seed}")
            target = run.target_folder
            # --resume continues the runs that started; one the interrupted compare never
            # reached starts now.
            with minutes.part(f"arm {run.name}"):
                run_arm(run.cfg, run.label, resume=resume and started(run),
                        overwrite=overwrite, budget=BudgetTarget(target) if target else None,
                        reuse=pool)
    finally:
        pool.close()


def read_results(runs: list[PlannedRun]) -> Results:
    """Every recorded round's metrics of every run, from the run folders."""
    results: Results = {}
    for run in runs:
        history = {}
        for k in range(run.cfg.rounds + 1):
            path = run.folder / f"round_{k}" / "metrics.json"
            if path.is_file():
                history[k] = json.loads(path.read_text())
        results.setdefault(run.label, {})[run.seed] = history
    return results


def summarize(cfg: Config, runs: list[PlannedRun], exp_dir: Path, *, report: bool) -> None:
    """comparison.json (every arm against the baseline, and each budget-matched pair, with
    bootstrap intervals over seeds and queries), its table, and report.md."""
    from selftrain.report.comparison import compare_runs
    from selftrain.report.comparison_table import comparison_tables

    labels = list(dict.fromkeys(r.label for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    pairs = list(dict.fromkeys([(r.target, r.label) for r in runs if r.target]
                               + [(a, b) for a, b in cfg.compare.pairs]))
    c, storage = cfg.compare, storage_for(cfg.run_root, cfg.staging_dir)
    if len(labels) > 1:
        result = compare_runs(exp_dir, labels, seeds, baseline=c.baseline, pairs=pairs,
                              resamples=c.resamples, bootstrap_seed=c.bootstrap_seed,
                              confidence=c.confidence)
        atomic_write_json(exp_dir / "comparison.json", result)
        storage.upload(exp_dir / "comparison.json")
        for table in comparison_tables(result):
            console.print(table)
    if report:
        from selftrain.report import write_report

        console.print(f"report: {write_report([exp_dir], exp_dir / 'report')}")
        storage.upload(exp_dir / "report")


def arms_round_table(experiment: str, k: int, results: Results) -> RenderableType:
    """Round k of every arm, one row each (the mean over seeds), over ARM_TABLE_KEYS (`@H`:
    each arm's hardest level), fitted to the terminal (report.md has every column)."""
    rows = []
    for arm, by_seed in results.items():
        ms = [h[k] for h in by_seed.values() if k in h]
        if ms:
            rows.append([arm, str(len(ms)), *[_shown(key, ms) for key in ARM_TABLE_KEYS]])
    return fitted_table(f"{experiment} · round {k}", ["arm", "seeds", *ARM_TABLE_KEYS], rows,
                        droppable=["critic_calls", "refined_share", "narrowing_kl"])


def _shown(key: str, rows: list[dict[str, Any]]) -> str:
    value = _mean(rows, key)
    text = fmt(round(value) if key in COUNT_KEYS and value is not None else value)
    if key == "distinct_paths" and value is not None:  # a mean: over how many queries
        text += over_queries([m.get(PATHS_QUERIES) for m in rows])
    return text


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [m.get(resolve_key(key, m)) for m in rows]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
