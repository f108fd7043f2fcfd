"""Diversity of what a round accepts (docs/metrics.md, "Diversity of what is accepted").

Each figure is computed over the accepted completions of every query with at least 2 of them
and averaged over those queries, unweighted; the `*_pooled` variant treats all accepted
completions of the round as one group (for `distinct_paths_pooled`: the number of distinct
solution keys among them, across queries). A group needs 2 completions, pooled ones included.

Conventions, the same in every metrics function:
- A figure that is undefined (no query with 2 accepted completions, no first-pass sample) is
  returned as None, which JSON writes as null; NaN is never returned.
- Tokens are the policy tokenizer's token ids of the completion (no special tokens), so that
  `ead`'s V is the vocabulary the tokens come from, and order n draws from V^n n-grams
  (whitespace words made `ead` exceed 1 on countdown, where a step like `4*3=12` is one word).
- An n with no n-gram at all (every completion shorter than n tokens) is skipped in the mean
  over n = 1..4 of `distinct_n` and `ead`; a group where every n is skipped (empty
  completions) leaves that group out of the mean.
- `self_bleu` is sacrebleu sentence BLEU-4 with its default "exp" smoothing and effective order
  (the defaults of `sacrebleu.sentence_bleu`; without effective order two identical 3-token
  completions would score 0), on the tokens above, divided by 100 so it lies in [0, 1].
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence

import numpy as np
import pandas as pd
from sacrebleu.metrics import BLEU

from selftrain.metrics.embed import Embedder
from selftrain.metrics.outcome import is_missing_answer
from selftrain.metrics.per_query import weighted_mean

DIVERSITY_METRICS = frozenset(
    {"distinct_paths", "distinct_n", "ead", "embed_div", "self_bleu", "answer_entropy"}
)
"""Base keys `diversity_metrics` can compute; each but answer_entropy also has `<key>_pooled`."""

MAX_N = 4

NGrams = list[Counter]
"""Per completion: index n-1 holds the Counter of its n-grams (tuples of tokens), n = 1..4."""


def default_split_steps(completion: str) -> list[str]:
    """Steps = the non-empty lines of a completion, stripped."""
    return [line.strip() for line in completion.splitlines() if line.strip()]


def default_solution_key(steps: list[str]) -> str:
    """Two solutions are the same path when their steps match up to whitespace."""
    return "\n".join("".join(step.split()) for step in steps)


TokenIds = Callable[[list[str]], list[list[int]]]
"""Texts -> their token ids, e.g. `tokenizer(texts, add_special_tokens=False)["input_ids"]`."""


def _ngrams(tokens: Sequence[int]) -> NGrams:
    return [
        Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        for n in range(1, MAX_N + 1)
    ]


def _unique_and_total(grams: Sequence[NGrams]) -> list[tuple[int, int]]:
    """(unique n-grams across the group, total n-grams) for n = 1..4."""
    out = []
    for n in range(MAX_N):
        unique = set().union(*(g[n].keys() for g in grams))
        out.append((len(unique), sum(g[n].total() for g in grams)))
    return out


def _distinct_n(stats: list[tuple[int, int]]) -> float | None:
    ratios = [u / c for u, c in stats if c > 0]
    return sum(ratios) / len(ratios) if ratios else None


def _ead(stats: list[tuple[int, int]], vocab_size: int) -> float | None:
    # Order n has V^n possible n-grams, and 1 - (1 - V^-n)^C is the expected share of them that
    # C uniform draws hit; -expm1(C * log1p(-V^-n)) computes it without losing precision. With V
    # for every order, a round's distinct bigrams of 101 characters gave ead_pooled 3.0.
    ratios = []
    for n, (u, c) in enumerate(stats, start=1):
        if c > 0:
            space = float(vocab_size) ** n
            ratios.append(u / (space * -math.expm1(c * math.log1p(-1 / space))))
    return sum(ratios) / len(ratios) if ratios else None


def _self_bleu(grams: Sequence[NGrams]) -> float:
    """Mean over completions of sentence BLEU against all the others of the group.

    Same statistics as `BLEU.sentence_score(hyp, others)` (tested), but each completion's
    n-grams are counted once: the clip count against "all others" is the largest count among
    the others, i.e. the group's top count unless the completion itself holds it, then the
    runner-up. This makes a round's pooled self-BLEU linear instead of quadratic in its size.
    """
    top: dict[tuple, tuple[int, int]] = {}  # n-gram -> (largest count, index holding it)
    second: dict[tuple, int] = {}  # n-gram -> second largest count (ties count twice)
    for i, g in enumerate(grams):
        for counter in g:
            for gram, k in counter.items():
                best = top.get(gram)
                if best is None or k > best[0]:
                    if best is not None:
                        second[gram] = best[0]
                    top[gram] = (k, i)
                elif k > second.get(gram, 0):
                    second[gram] = k
    lengths = [g[0].total() for g in grams]
    length_count = Counter(lengths)
    distinct_lengths = sorted(length_count)

    scores = []
    for i, g in enumerate(grams):
        correct, total = [0] * MAX_N, [0] * MAX_N
        for n, counter in enumerate(g):
            for gram, k in counter.items():
                best, owner = top[gram]
                ref = second.get(gram, 0) if owner == i else best
                correct[n] += min(k, ref)
                total[n] += k
        ref_len = _closest_other_length(lengths[i], length_count, distinct_lengths)
        bleu = BLEU.compute_bleu(
            correct, total, lengths[i], ref_len, smooth_method="exp", effective_order=True
        )
        scores.append(bleu.score / 100)
    return sum(scores) / len(scores)


def _closest_other_length(own: int, count: Counter, distinct: list[int]) -> int:
    """sacrebleu's reference length: the closest among the others' lengths, ties to the shorter."""
    if count[own] > 1:
        return own
    pos = bisect.bisect_left(distinct, own)
    below = distinct[pos - 1] if pos > 0 else None
    above = distinct[pos + 1] if pos + 1 < len(distinct) else None
    if below is None or (above is not None and above - own < own - below):
        return above
    return below


def _embed_div(emb: np.ndarray) -> float:
    """1 - mean cosine over pairs i < j, from the sum vector: sum_{i!=j} e_i.e_j = |S|^2 - sum|e_i|^2."""
    m = len(emb)
    s = emb.sum(axis=0)
    pair_sum = float(s @ s) - float((emb * emb).sum())
    return 1.0 - pair_sum / (m * (m - 1))


def _answer_entropy(samples: pd.DataFrame) -> float | None:
    """Mean over queries of the entropy (nats) of first-pass answers; "no answer" is one value."""
    first_pass = samples[samples["origin"] == "sample"]
    entropies = []
    for _, answers in first_pass.groupby("query_id", sort=False)["answer"]:
        counts = Counter(None if is_missing_answer(a) else a for a in answers)
        p = np.fromiter(counts.values(), dtype=np.float64) / len(answers)
        entropies.append(float(-(p * np.log(p)).sum()))
    return sum(entropies) / len(entropies) if entropies else None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def solution_keys(
    completions: Sequence[str],
    solution_key: Callable[[list[str]], str] | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
) -> list[str]:
    """Each completion's solution key: the task's `solution_key` of its `split_steps` (None: the
    defaults above). Steps are re-derived because train.parquet need not carry them."""
    key_of = solution_key or default_solution_key
    split = split_steps or default_split_steps
    return [key_of(split(c)) for c in completions]


def paths_per_query(query_ids: Sequence[object], keys: Sequence[str]) -> pd.Series:
    """query_id -> number of distinct solution keys among its accepted completions, for the
    queries with at least 2 of them (sorted by query_id)."""
    counts = pd.Series(list(keys)).groupby(list(query_ids), sort=True).agg(["size", "nunique"])
    return counts.loc[counts["size"] >= 2, "nunique"].astype(np.float64)


def distinct_paths(paths: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray | None:
    """`distinct_paths`: mean of per-query path counts (NaN = fewer than 2 accepted completions,
    left out); weights: see selftrain.metrics.per_query."""
    paths = np.asarray(paths, dtype=np.float64)
    return weighted_mean(paths, ~np.isnan(paths), weights)


def _check_enabled(enabled: Collection[str], vocab_size: int) -> set[str]:
    enabled = set(enabled)
    unknown = enabled - DIVERSITY_METRICS
    if unknown:
        raise ValueError(
            f"unknown diversity metric(s) {sorted(unknown)}; known: {sorted(DIVERSITY_METRICS)}"
        )
    if "ead" in enabled and vocab_size < 1:
        raise ValueError(f"ead needs the tokenizer's vocab_size >= 1, got {vocab_size}")
    return enabled


def group_diversity(
    completions: Sequence[str],
    groups: Sequence[np.ndarray],
    *,
    enabled: Collection[str],
    token_ids: TokenIds,
    vocab_size: int = 0,
    embedder: Embedder | None = None,
) -> dict[str, list[float | None]]:
    """`distinct_n`, `ead`, `self_bleu` and `embed_div` (those in `enabled`) of each group of
    `completions` (index arrays, each of 2 or more): one value per group, None where a group
    has no n-gram. Tokens and embeddings are computed once for all completions, so the
    training set and the test split pay one tokenizer and one MiniLM call each."""
    out: dict[str, list[float | None]] = {}
    enabled = set(enabled)
    if enabled & {"distinct_n", "ead", "self_bleu"}:
        grams = [_ngrams(ids) for ids in (token_ids(list(completions)) if completions else [])]
        stats = [_unique_and_total([grams[i] for i in idx]) for idx in groups]
        if "distinct_n" in enabled:
            out["distinct_n"] = [_distinct_n(s) for s in stats]
        if "ead" in enabled:
            out["ead"] = [_ead(s, vocab_size) for s in stats]
        if "self_bleu" in enabled:
            out["self_bleu"] = [_self_bleu([grams[i] for i in idx]) for idx in groups]
    if "embed_div" in enabled:
        # One batched call for the whole round; the groups then only slice rows.
        values: list[float | None] = []
        if len(groups):  # the model is loaded only when there is something to embed
            emb = (embedder or Embedder()).encode(completions).astype(np.float64)
            values = [_embed_div(emb[idx]) for idx in groups]
        out["embed_div"] = values
    return out


def diversity_metrics(
    train: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    solution_key: Callable[[list[str]], str] | None,
    token_ids: TokenIds,
    vocab_size: int,
    enabled: Collection[str] = DIVERSITY_METRICS,
    embedder: Embedder | None = None,
    split_steps: Callable[[str], list[str]] | None = None,
) -> dict[str, float | None]:
    """The diversity block of one round.

    train: rows of train.parquet (query_id, completion). samples: rows of samples.parquet, used
    by answer_entropy only. solution_key / split_steps: the task's (see `solution_keys`).
    token_ids / vocab_size: the policy tokenizer's token ids and V, for the n-gram figures. enabled: base keys to compute (switch off
    the slow embed_div / self_bleu here). embedder: None loads the offline MiniLM on first use.
    """
    enabled = _check_enabled(enabled, vocab_size)
    completions = train["completion"].tolist()
    per_query = [
        idx for idx in train.groupby("query_id", sort=True).indices.values() if len(idx) >= 2
    ]
    # Index arrays of the groups: the per-query ones, then the whole round when it has 2 rows.
    groups = per_query + ([np.arange(len(completions))] if len(completions) >= 2 else [])
    out: dict[str, float | None] = {}

    def put(name: str, values: list[float | None]) -> None:
        """values: one per entry of `groups`; split into the query mean and the pooled figure."""
        out[name] = _mean(values[: len(per_query)])
        out[f"{name}_pooled"] = values[-1] if len(groups) > len(per_query) else None

    if "distinct_paths" in enabled:
        keys = solution_keys(completions, solution_key, split_steps)
        paths = paths_per_query(train["query_id"], keys)
        out["distinct_paths"] = distinct_paths(paths)
        out["distinct_paths_queries"] = len(paths)  # what distinct_paths is a mean over
        out["distinct_paths_pooled"] = float(len(set(keys))) if len(keys) >= 2 else None

    per_group = group_diversity(completions, groups, enabled=enabled, token_ids=token_ids,
                                vocab_size=vocab_size, embedder=embedder)
    for name, values in per_group.items():
        put(name, values)

    if "answer_entropy" in enabled:
        out["answer_entropy"] = _answer_entropy(samples)
    return out
