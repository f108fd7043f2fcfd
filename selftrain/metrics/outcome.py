"""Outcome figures on the test split (docs/metrics.md, "Outcome"): pass@1, pass@k, maj@n, acc@L.

Input is the rows of `eval.parquet` (query_id, difficulty, sample_idx, answer, correct). Every
test query must have the same number n of samples, since `maj@n` names one n.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from selftrain.metrics.per_query import weighted_mean


def is_missing_answer(answer: Any) -> bool:
    """True for "no answer": None, NaN/NA, or an empty string.

    One rule for `maj@n` (no answer is never correct) and `answer_entropy` (no answer is one
    more value), so the two figures agree on what a missing answer is.
    """
    if isinstance(answer, str):
        return answer.strip() == ""
    return answer is None or bool(pd.isna(answer))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one query: 1 - C(n-c, k) / C(n, k), for n samples of which c are correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021), which avoids the huge
    binomials of large n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(
            f"pass@{k} needs 1 <= k <= n, but there are n={n} samples per query; "
            f"lower k in eval.pass_k or raise eval.num_samples"
        )
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _majority_correct(group: pd.DataFrame) -> bool:
    """Whether the most frequent answer of one query (rows sorted by sample_idx) is correct.

    Ties go to the answer seen first: Counter keeps first-seen order and max() returns the first
    maximum. A missing answer is a value of its own (key None) that is never correct.
    """
    answers = [None if is_missing_answer(a) else a for a in group["answer"]]
    counts = Counter(answers)
    top = max(counts, key=counts.__getitem__)
    if top is None:
        return False
    return bool(group["correct"].iloc[answers.index(top)])


def per_test_query(eval_df: pd.DataFrame) -> pd.DataFrame:
    """One row per test query, sorted by query_id: `level`, `c` correct of `n` samples, `solve`
    = c / n, and `maj` (whether its majority answer is correct)."""
    if eval_df.empty:
        raise ValueError("eval.parquet rows are empty: the test split produced no samples")
    df = eval_df.sort_values(["query_id", "sample_idx"], kind="stable")
    groups = df.groupby("query_id", sort=True)
    sizes = groups.size()
    if sizes.nunique() != 1:
        raise ValueError(
            "every test query needs the same number of samples, got "
            f"{sizes.value_counts().sort_index().to_dict()} (samples per query: queries)"
        )
    n = int(sizes.iloc[0])
    c = groups["correct"].sum().astype(int)
    return pd.DataFrame(
        {
            "level": groups["difficulty"].first(),
            "c": c,
            "n": n,
            "solve": c / n,
            "maj": groups[["answer", "correct"]].apply(_majority_correct),
        }
    )


def solve_rate(
    table: pd.DataFrame, level: int | None = None, weights: np.ndarray | None = None
) -> float | np.ndarray | None:
    """`pass@1` (level None) or `acc@level`: mean over test queries of c / n (`per_test_query`
    rows; weights: see selftrain.metrics.per_query)."""
    where = None if level is None else (table["level"] == level).to_numpy()
    return weighted_mean(table["solve"].to_numpy(), where, weights)


def outcome_metrics(eval_df: pd.DataFrame, pass_ks: list[int]) -> dict[str, float]:
    """`pass@1`, `pass@k` for k in `pass_ks`, `maj@n` and `acc@L` of one round's test samples."""
    table = per_test_query(eval_df)
    n = int(table["n"].iloc[0])
    out: dict[str, float] = {"pass@1": solve_rate(table)}
    for k in sorted(set(pass_ks) - {1}):
        out[f"pass@{k}"] = float(table["c"].map(lambda c, k=k: pass_at_k(n, c, k)).mean())
    out[f"maj@{n}"] = float(table["maj"].mean())
    for level in sorted(table["level"].unique()):
        out[f"acc@{int(level)}"] = solve_rate(table, level)
    return out


def score_metrics(eval_df: pd.DataFrame) -> dict[str, float]:
    """A graded task's `score_mean` and `score_mean@L`: mean over test queries of the mean known
    score of the query's samples (unknown scores left out; a query with none left out). {} when
    no row has a score (an ungraded task)."""
    if "score" not in eval_df.columns:
        return {}
    known = eval_df[eval_df["score"].notna()]
    if known.empty:
        return {}
    per_query = known.groupby("query_id").agg(level=("difficulty", "first"),
                                              score=("score", "mean"))
    out = {"score_mean": float(per_query["score"].mean())}
    for level, group in per_query.groupby("level"):
        out[f"score_mean@{int(level)}"] = float(group["score"].mean())
    return out


def unknown_score_share(rows: pd.DataFrame) -> float:
    """The share of `rows` whose score is unknown (null: a judge's answer without a readable
    score). Rows without a `score` column have no known score (a file's rows are written without
    the column when none has one): share 1."""
    if rows.empty:
        return 0.0
    return float(rows["score"].isna().mean()) if "score" in rows.columns else 1.0


def unknown_score_shares(samples: pd.DataFrame, evals: pd.DataFrame) -> dict[str, float]:
    """A graded task's `unknown_score_share` (the round's samples, samples.parquet) and
    `eval_unknown_score_share` (the test split, eval.parquet)."""
    return {"unknown_score_share": unknown_score_share(samples),
            "eval_unknown_score_share": unknown_score_share(evals)}
