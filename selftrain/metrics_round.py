"""All METRICS.md figures of one round, computed from the round's parquet files.

Reading back what was written (rather than the in-memory records) is deliberate: the numbers in
`metrics.json` are then, by construction, a recomputation from the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from selftrain.config import Config
from selftrain.metrics import DIVERSITY_METRICS, diversity_metrics, outcome_metrics, tail_metrics
from selftrain.tasks import Task
from selftrain.types import Query


def round_metrics(cfg: Config, task: Task, round_dir: Path, pool: list[Query],
                  samples_per_query: int, times: dict[str, float],
                  vocab_size: int) -> dict[str, Any]:
    samples = pd.read_parquet(round_dir / "samples.parquet")
    train = pd.read_parquet(round_dir / "train.parquet")
    evals = pd.read_parquet(round_dir / "eval.parquet")
    crit_path = round_dir / "critiques.parquet"
    critiques = pd.read_parquet(crit_path) if crit_path.exists() else None
    pool_df = pd.DataFrame({"query_id": [q.query_id for q in pool],
                            "difficulty": [q.difficulty for q in pool]})
    disabled = set(cfg.metrics.disabled)

    out: dict[str, Any] = {}
    out.update(tail_metrics(pool_df, samples, train, samples_per_query))
    out.update(outcome_metrics(evals, cfg.eval.pass_k + [cfg.eval.num_samples]))
    out.update(diversity_metrics(
        train, samples, solution_key=task.solution_key, split_steps=task.split_steps,
        vocab_size=vocab_size, enabled=DIVERSITY_METRICS - disabled))
    extra = getattr(task, "extra_metrics", None)
    if extra is not None:  # task-specific figures (search agents: searches_per_traj, ...)
        out.update(extra(samples, train))
    out["gen_tokens"] = int(samples["num_tokens"].sum())
    out["critic_calls"] = 0 if critiques is None else len(critiques)
    out["critic_tokens"] = 0 if critiques is None else int(critiques["critic_tokens"].sum())
    out["train_tokens"] = int(train["completion_tokens"].sum()) if len(train) else 0
    out["samples_per_query"] = samples_per_query
    for stage, seconds in times.items():
        out[f"time/{stage}"] = seconds
    return {k: v for k, v in out.items() if k.split("@")[0].split("/")[0] not in disabled}
