"""Run-folder parquet rows <-> the records stages pass around (resume reads them back)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from critics import Critique, StepVerdict
from selftrain.types import Sample

TRAIN_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("query_id", pa.string()), ("difficulty", pa.int64()),
    ("prompt", pa.string()), ("completion", pa.string()), ("origin", pa.string()),
    ("loss_mask", pa.list_(pa.list_(pa.int64()))), ("completion_tokens", pa.int64()),
])

PAIRS_FILE = "pairs.parquet"
"""A dpo round's training data: preference pairs (selftrain/pairs.py), in TRL's layout."""
PAIR_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
    ("query_id", pa.string()), ("difficulty", pa.int64()), ("origin", pa.string()),
    ("chosen_id", pa.string()), ("rejected_id", pa.string()),
])


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
