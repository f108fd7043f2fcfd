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

from typing import Any

from selftrain.cluster.pool import GroupPool
from selftrain.config import Config
from selftrain.heap import settle_heap
from selftrain.loop.resume import finished_history
from selftrain.loop.rounds import Round
from selftrain.loop.run import RunContext, open_run
from selftrain.runfolder.budget import BudgetTarget, arm_dir
from selftrain.tasks import abilities
from selftrain.tracking import console, run_progress_table


def run_arm(cfg: Config, label: str, *, resume: bool = False, overwrite: bool = False,
            budget: BudgetTarget | None = None,
            reuse: GroupPool | None = None) -> dict[int, dict[str, Any]]:
    """Run (or resume) one arm; returns the metrics of every round. A resume of a finished run
    answers from its manifest, before Ray starts. `reuse`: a sequential compare's actor groups
    (`selftrain.cluster.pool`)."""
    if resume and (history := finished_history(cfg, arm_dir(cfg, label))) is not None:
        console.print(run_progress_table(f"{cfg.experiment} · {label} · seed {cfg.seed}", history))
        console.print(f"{arm_dir(cfg, label)}: all {cfg.rounds} rounds are recorded; nothing to "
                      f"do (extend it with rounds=N)", highlight=False, soft_wrap=True)
        return history
    with open_run(cfg, label, resume=resume, overwrite=overwrite, budget=budget,
                  reuse=reuse) as run:
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
        settle_heap()  # what the round loaded (its figures' libraries, MiniLM) stays too
    return history
