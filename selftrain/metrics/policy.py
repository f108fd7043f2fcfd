"""Diversity of what the policy itself writes (docs/metrics.md, "Diversity of the policy").

The training-set figures describe what a round accepts; these describe the n samples of every
test query in `eval.parquet`, in two groups per query: all n samples, and the passing
(correct) ones. The n-gram and embedding figures are `distinct_n`, `self_bleu` and `embed_div`
of `selftrain.metrics.diversity` over those groups (a group needs 2 samples), averaged over
queries. The class figures count the classes a semantic judge (`selftrain.judges`) puts a
query's samples into: every query counts (0 passing samples = 0 classes), and `effective_div`
divides by n, so it measures distinct valid outputs at a fixed budget (Shypula et al. 2025).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from selftrain.metrics.diversity import TokenIds, group_diversity
from selftrain.metrics.embed import Embedder
from selftrain.types import Judge

GROUP_FIGURES = {"eval_distinct_n": "distinct_n", "eval_self_bleu": "self_bleu",
                 "eval_embed_div": "embed_div"}
"""Policy figure -> the training-set figure it applies to a test query's samples."""

CLASS_FIGURES = frozenset({"eval_classes", "eval_classes_passing", "effective_div",
                           "passing_pair_div"})

POLICY_METRICS = frozenset(GROUP_FIGURES) | CLASS_FIGURES
"""Keys a user can switch off in `metrics.disabled` (an `eval_X` key also drops `eval_X_passing`)."""


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def query_groups(evals: pd.DataFrame) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """(completions in query_id, sample_idx order, one index array per test query, passing
    mask): the rows of eval.parquet as the policy figures read them."""
    df = evals.sort_values(["query_id", "sample_idx"], kind="stable").reset_index(drop=True)
    per_query = list(df.groupby("query_id", sort=True).indices.values())
    return df["completion"].tolist(), per_query, df["correct"].to_numpy(dtype=bool)


def class_figures(labels: Sequence[Sequence[int]],
                  passing_labels: Sequence[Sequence[int]]) -> dict[str, float | None]:
    """The class figures from each test query's class labels: of all its n samples, and of its
    passing samples alone (judged as a group of their own, so two passing samples are never
    joined through a failing one)."""
    classes, classes_passing, effective, pair_div = [], [], [], []
    for lab, good in zip(labels, passing_labels):
        n, p = len(lab), len(good)
        per_class = Counter(good)
        classes.append(len(set(lab)))
        classes_passing.append(len(per_class))
        effective.append(len(per_class) / n)
        # pairs both passing, less those within one class
        diff = p * (p - 1) / 2 - sum(c * (c - 1) / 2 for c in per_class.values())
        pair_div.append(diff / (n * (n - 1) / 2) if n >= 2 else None)
    return {"eval_classes": _mean(classes), "eval_classes_passing": _mean(classes_passing),
            "effective_div": _mean(effective), "passing_pair_div": _mean(pair_div)}


def policy_diversity(evals: pd.DataFrame, *, judge: Judge, token_ids: TokenIds,
                     enabled: Collection[str] = POLICY_METRICS,
                     embedder: Embedder | None = None) -> dict[str, float | None]:
    """The policy's diversity figures of one round, from the rows of eval.parquet (query_id,
    sample_idx, completion, correct). Each completion is tokenized and embedded once; the
    judge is called once, on every query's samples and on its passing ones."""
    enabled = set(enabled)
    completions, per_query, ok = query_groups(evals)
    passing = [idx[ok[idx]] for idx in per_query]
    groups_all = [idx for idx in per_query if len(idx) >= 2]
    groups_pass = [idx for idx in passing if len(idx) >= 2]
    wanted = {base for key, base in GROUP_FIGURES.items() if key in enabled}
    out: dict[str, float | None] = {}
    values = group_diversity(completions, groups_all + groups_pass, enabled=wanted,
                             token_ids=token_ids, embedder=embedder)
    for key, base in GROUP_FIGURES.items():
        if base in values:
            out[key] = _mean(values[base][: len(groups_all)])
            out[f"{key}_passing"] = _mean(values[base][len(groups_all):])
    if enabled & CLASS_FIGURES:
        # one judge call: every query's samples, then its passing ones
        texts = [[completions[i] for i in idx] for idx in per_query + passing]
        labels = judge.classes(texts)
        out.update(class_figures(labels[: len(per_query)], labels[len(per_query):]))
    return out
