"""All figures of docs/metrics.md for one round, computed from the round's parquet files.

Reading back what was written (rather than the in-memory records) is deliberate: the numbers in
`metrics.json` are then, by construction, a recomputation from the run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from selftrain.judges import build_judge
from selftrain.metrics import (
    DIVERSITY_METRICS,
    correct_per_query,
    diversity_metrics,
    length_histogram,
    outcome_metrics,
    score_metrics,
    tail_metrics,
)
from selftrain.metrics.embed import Embedder
from selftrain.metrics.formats import format_metrics
from selftrain.metrics.outcome import unknown_score_shares
from selftrain.metrics.pairs import pair_metrics
from selftrain.metrics.policy import CLASS_FIGURES, POLICY_METRICS, policy_diversity
from selftrain.runfolder.schemas import PAIRS_FILE, TRAIN_SCHEMA
from selftrain.types import Query

if TYPE_CHECKING:  # annotations only: reading a round's files needs no task or config code
    from selftrain.config import Config
    from selftrain.tasks import Task


@dataclass
class RoundFrames:
    """A round's parquet files, read once for all its figures."""

    samples: pd.DataFrame
    train: pd.DataFrame
    evals: pd.DataFrame
    critiques: pd.DataFrame | None
    pairs: pd.DataFrame | None = None
    """pairs.parquet, in a round whose objective learns from pairs (it then has no train rows)."""

    @classmethod
    def read(cls, round_dir: Path) -> RoundFrames:
        crit_path, pairs_path = round_dir / "critiques.parquet", round_dir / PAIRS_FILE
        train_path = round_dir / "train.parquet"
        return cls(samples=pd.read_parquet(round_dir / "samples.parquet"),
                   train=(pd.read_parquet(train_path) if train_path.exists()
                          else TRAIN_SCHEMA.empty_table().to_pandas()),
                   evals=pd.read_parquet(round_dir / "eval.parquet"),
                   critiques=pd.read_parquet(crit_path) if crit_path.exists() else None,
                   pairs=pd.read_parquet(pairs_path) if pairs_path.exists() else None)


def embeds_eval(cfg: Config) -> bool:
    """Whether the evaluate stage should start embedding the test samples as they arrive
    (`metrics.prefetch_embeddings`, and this round's metrics embed them: MiniLM's
    `eval_embed_div`, or the embedding judge's classes)."""
    disabled = set(cfg.metrics.disabled)
    if not cfg.metrics.prefetch_embeddings or cfg.eval.num_samples < 2 or not (
            POLICY_METRICS - disabled):
        return False
    return "eval_embed_div" not in disabled or (
        cfg.judge.name == "embedding" and not CLASS_FIGURES <= disabled)


def metrics_embedder(cfg: Config) -> Embedder:
    """The MiniLM embedder of a round's figures (`metrics.embed_precision`, resolved on this
    machine: its `precision` is what the metrics stage records)."""
    return Embedder(precision=cfg.metrics.embed_precision)


def round_metrics(cfg: Config, task: Task, frames: RoundFrames, pool: list[Query],
                  test: list[Query], samples_per_query: int, times: dict[str, float],
                  tokenizer: Any, part: Callable[[str], AbstractContextManager] = nullcontext
                  ) -> dict[str, Any]:
    """Every figure of one round. tokenizer: the policy's (a Hugging Face tokenizer), whose
    token ids and vocabulary the n-gram diversity figures count in; test: the test queries
    (task figures such as a search task's em/subem read their gold answers); part: the stage
    timer's `part`, which times the policy's diversity figures (`policy_diversity`, what they
    add to a round: `make bench` reports it)."""
    samples, train, evals, critiques = frames.samples, frames.train, frames.evals, frames.critiques
    pool_df = pd.DataFrame({"query_id": [q.query_id for q in pool],
                            "difficulty": [q.difficulty for q in pool]})
    disabled = set(cfg.metrics.disabled)
    embedder = metrics_embedder(cfg)

    out: dict[str, Any] = {}
    out.update(tail_metrics(pool_df, samples, train, samples_per_query))
    out.update(outcome_metrics(evals, cfg.eval.pass_k + [cfg.eval.num_samples]))
    out.update(score_metrics(evals))
    out.update(diversity_metrics(
        train, samples, solution_key=task.solution_key, split_steps=task.split_steps,
        token_ids=lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"],
        vocab_size=len(tokenizer), enabled=DIVERSITY_METRICS - disabled, embedder=embedder))
    if POLICY_METRICS - disabled:  # what the policy itself writes: the test split's samples
        with part("policy_diversity"):
            judge = build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args, task)
            out.update(policy_diversity(
                evals, judge=judge, enabled=POLICY_METRICS - disabled, embedder=embedder,
                token_ids=lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]))
    from selftrain.tasks import abilities

    formats = abilities(task).formats
    if formats is not None:  # each solution format's share (format collapse)
        out.update(format_metrics(train["completion"].tolist(), evals["completion"].tolist(),
                                  formats.format_of))
    if abilities(task).graded is not None:  # what the scorer could not grade (an unreadable judge)
        out.update(unknown_score_shares(samples, evals))
    figures = abilities(task).figures
    if figures is not None:  # task-specific figures (search agents: searches_per_traj, em, ...)
        out.update(figures.extra_metrics(samples=samples, train=train, evals=evals, test=test))
    out["gen_tokens"] = int(samples["num_tokens"].sum())
    out["critic_calls"] = 0 if critiques is None else len(critiques)
    out["critic_tokens"] = 0 if critiques is None else int(critiques["critic_tokens"].sum())
    out["train_tokens"] = int(train["completion_tokens"].sum()) if len(train) else 0
    out["samples_per_query"] = samples_per_query
    if frames.pairs is not None:
        out.update(pair_metrics(pool_df, samples, frames.pairs))
    for stage, seconds in times.items():
        out[f"time/{stage}"] = seconds
    return {k: v for k, v in out.items() if k.split("@")[0].split("/")[0] not in disabled}


def finetune_figures(finetune: dict[str, Any]) -> dict[str, Any]:
    """The objective's figures of a round's finetune (dpo: `train/loss`, `train/rewards/...`),
    as rank 0 reported them in the manifest's record (the ranks already summed them)."""
    workers = finetune.get("workers") or [{}]
    return {key: v for key, v in workers[0].items() if key.startswith("train/")}


def round_histograms(task: Task, frames: RoundFrames, pool: list[Query],
                     samples_per_query: int) -> dict[str, Any]:
    """GSI-style tail analysis of the round's training data (kept as histograms.json):
    accepted-completion lengths against the task's reference solutions, and how many pool
    queries got 0, 1, ..., K correct first-pass samples."""
    samples, train = frames.samples, frames.train
    references = [ref for q in pool for ref in task.reference_solutions(q)[:4]]
    return {
        "length": length_histogram(train["completion"].tolist(), references, bins=20),
        "correct_per_query": correct_per_query(samples, samples_per_query),
    }


def example_rows(frames: RoundFrames, k: int, limit: int = 8) -> list[dict[str, Any]]:
    """A few samples of the round with their critiques, for a wandb table: correct ones,
    failed ones and refinements, so a reader sees what the critic said."""
    samples = frames.samples
    if frames.critiques is not None:
        crit = frames.critiques[["sample_id", "first_error", "feedback"]]
        samples = samples.merge(crit, on="sample_id", how="left")
    picks = pd.concat([
        samples[(samples["origin"] == "sample") & samples["correct"]].head(limit // 4),
        samples[(samples["origin"] == "sample") & ~samples["correct"]].head(limit // 4),
        samples[samples["origin"] == "refine"].head(limit // 2),
    ]).head(limit)
    rows = []
    for r in picks.to_dict("records"):
        rows.append({"round": k, "sample_id": r["sample_id"], "difficulty": int(r["difficulty"]),
                     "origin": r["origin"], "correct": bool(r["correct"]), "prompt": r["prompt"],
                     "completion": r["completion"],
                     "first_error": int(r["first_error"]) if pd.notna(r.get("first_error")) else None,
                     "feedback": r.get("feedback") if isinstance(r.get("feedback"), str) else ""})
    return rows
