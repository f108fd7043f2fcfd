"""The round driver: one process owns the loop and calls the named stages in order.

    round 0:  generate → critique → refine → filter → evaluate → metrics      (base policy)
    round k:  finetune(train set of round k-1) → generate → … → metrics      (policy k)

A task without difficulty levels (math without a level column) gets them from the base policy
first: round 0's generate and evaluate, then the difficulty stage, whose levels every figure
(round 0's included) uses. Each stage's outputs are written atomically and recorded in
`manifest.json`; a resumed run reads finished stages back instead of redoing them, and of a
finished round only its figures.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import ray

from selftrain.config import Config
from selftrain.ray_reaper import watch_local_cluster
from selftrain.resume import finished_history
from selftrain.rounds import Round
from selftrain.run import BudgetTarget, RunContext, arm_dir, open_run
from selftrain.tasks import abilities
from selftrain.tracking import console, run_progress_table


def run_arm(cfg: Config, label: str, *, resume: bool = False, overwrite: bool = False,
            budget: BudgetTarget | None = None) -> dict[int, dict[str, Any]]:
    """Run (or resume) one arm; returns the metrics of every round. A resume of a finished run
    answers from its manifest, before Ray starts."""
    if resume and (history := finished_history(cfg, arm_dir(cfg, label))) is not None:
        console.print(run_progress_table(f"{cfg.experiment} · {label} · seed {cfg.seed}", history))
        console.print(f"{arm_dir(cfg, label)}: all {cfg.rounds} rounds are recorded; nothing to "
                      f"do (extend it with rounds=N)", highlight=False, soft_wrap=True)
        return history
    with open_run(cfg, label, resume=resume, overwrite=overwrite, budget=budget) as run:
        return run_rounds(run)


def run_rounds(run: RunContext) -> dict[int, dict[str, Any]]:
    """Round 0 (the base policy), then `rounds` rounds of finetune and sampling."""
    cfg, history, policy = run.cfg, {}, run.base
    if abilities(run.task).policy_levels is not None:
        run.apply_levels(Round(run, 0).difficulty(policy))
    for k in range(cfg.rounds + 1):
        rnd = Round(run, k)
        if k > 0:
            policy = rnd.finetune(policy)
        if rnd.complete:
            history[k] = rnd.read_metrics()
        else:
            samples = rnd.generate(policy)
            critiques = {}
            if run.critic is not None:
                critiques = rnd.critique(samples)
                samples, critiques = rnd.refine(samples, critiques, policy)
            rnd.filter(samples, critiques)
            rnd.evaluate(policy)
            history[k] = rnd.metrics(policy)
        console.print(run_progress_table(f"{cfg.experiment} · {run.label} · seed {cfg.seed}",
                                         history))
    return history


def worker_env() -> dict[str, str]:
    """Environment for every Ray worker of a run (the user's own settings win): tokenizers'
    own thread pool would fight the actors' torch threads, and progress bars of model loading
    and saving are not the user's business."""
    defaults = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    return {key: os.environ.get(key, value) for key, value in defaults.items()}


def start_ray(cfg: Config, temp_dir: Path) -> None:
    """Connect to `ray.address` / RAY_ADDRESS, or start a local cluster with its temp dir in
    the run root. Workers get the driver's import path, so `critic.path` modules resolve."""
    if ray.is_initialized():
        return
    # Ray's notice that a local cluster uses token authentication is not the user's business
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} | worker_env()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                 logging_level="WARNING")
        return
    temp_dir = temp_dir.resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=cfg.ray.num_cpus, _temp_dir=str(temp_dir), include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
    # the cluster this driver started ends with it, also when the driver is SIGKILLed
    watch_local_cluster(ray._private.worker._global_node.get_session_dir_path())
