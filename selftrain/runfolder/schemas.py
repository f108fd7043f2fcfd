"""The run folder's rows, in one place: the records stages pass around (`selftrain.types`) <->
the parquet rows of docs/design.md, with their builders and readers (resume reads them back).

    samples.parquet     one `Sample` per row (`Sample.row`), refinements after the samples
    critiques.parquet   one `Critique` per row (`Critique.row`), in the order of the samples
    train.parquet       `train_row` of each kept sample, `TRAIN_SCHEMA`
    eval.parquet        `eval_row` of each test sample

`manifest.json`'s stage records (files with their rows and sha256) are the run folder's own
(`selftrain.runfolder.folder.RunFolder.mark_done`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from selftrain.types import Critique, Query, Sample, StepVerdict

TRAIN_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("query_id", pa.string()), ("difficulty", pa.int64()),
    ("prompt", pa.string()), ("completion", pa.string()), ("origin", pa.string()),
    ("loss_mask", pa.list_(pa.list_(pa.int64()))), ("completion_tokens", pa.int64()),
])
"""train.parquet: what a finetune reads (`loss_mask`: character spans of the completion left
out of the loss; `completion_tokens`: the policy tokenizer's count)."""

PAIRS_FILE = "pairs.parquet"
"""A dpo round's training data: preference pairs (selftrain/arms/pairs.py), in TRL's layout."""
PAIR_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
    ("query_id", pa.string()), ("difficulty", pa.int64()), ("origin", pa.string()),
    ("chosen_id", pa.string()), ("rejected_id", pa.string()),
    ("chosen_mask", pa.list_(pa.list_(pa.int64()))),
    ("rejected_mask", pa.list_(pa.list_(pa.int64()))),
])
"""(`chosen_mask`, `rejected_mask`: character spans of each side left out of its log-probs, an
agent's observations, as train.parquet's `loss_mask`; null for a text task.)"""


def train_row(sample: Sample, completion_tokens: int) -> dict[str, Any]:
    """One row of train.parquet: a kept sample or refinement."""
    return {"sample_id": sample.sample_id, "query_id": sample.query_id,
            "difficulty": sample.difficulty, "prompt": sample.prompt,
            "completion": sample.completion, "origin": sample.origin,
            "loss_mask": sample.loss_mask, "completion_tokens": completion_tokens}


def scored_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of samples.parquet or eval.parquet as written: the `score` column only where a row
    has a score (a graded task), so an ungraded task's files keep their layout."""
    if any(r.get("score") is not None for r in rows):
        return rows
    return [{k: v for k, v in r.items() if k != "score"} for r in rows]


def eval_row(query: Query, sample_idx: int, completion: str, answer: str | None, correct: bool,
             num_tokens: int, score: float | None = None) -> dict[str, Any]:
    """One row of eval.parquet: test sample `sample_idx` of `query` (`score`: a graded task's)."""
    return {"query_id": query.query_id, "difficulty": query.difficulty, "sample_idx": sample_idx,
            "completion": completion, "answer": answer, "correct": correct,
            "num_tokens": num_tokens, "score": score}


def first_pass(samples: list[Sample], num_samples: int) -> list[Sample]:
    """The first `num_samples` (K) samples the policy drew for each query, never a budget
    top-up or a later wave. samples.parquet keeps each query's samples in the order they were
    drawn (the first pass of every query, then any top-up), so a query's first K of origin
    "sample" are its samples 0..K-1: the index is read from the order, not from the id."""
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        if s.origin == "sample":
            seen[s.query_id] = seen.get(s.query_id, 0) + 1
            if seen[s.query_id] <= num_samples:
                out.append(s)
    return out


def read_samples(path: Path, origin: str | None = None) -> list[Sample]:
    df = pd.read_parquet(path)
    if origin is not None:
        df = df[df["origin"] == origin]
    out = []
    for r in df.to_dict("records"):
        r["steps"] = list(r["steps"])
        r["loss_mask"] = [list(x) for x in r["loss_mask"]] if r.get("loss_mask") is not None else None
        r["parent_id"] = r["parent_id"] if isinstance(r["parent_id"], str) else None
        r["answer"] = r["answer"] if isinstance(r["answer"], str) else None
        score = r.get("score")
        r["score"] = None if score is None or score != score else float(score)  # NaN: unknown
        out.append(Sample(**r))
    return out


def read_critiques(path: Path) -> dict[str, Critique]:
    out = {}
    for r in pd.read_parquet(path).to_dict("records"):
        verdicts = [StepVerdict(ok=None if unk else bool(ok), score=float(sc), feedback=fb)
                    for ok, unk, sc, fb in zip(r["step_ok"], r["step_unknown"], r["step_score"],
                                               r["step_feedback"])]
        out[r["sample_id"]] = Critique(sample_id=r["sample_id"], critic=r["critic"],
                                       verdicts=verdicts, raw_text=r["raw_text"],
                                       tokens=int(r["critic_tokens"]))
    return out
