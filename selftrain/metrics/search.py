"""Search-agent figures (docs/metrics.md, "Search agents"), re-derived from completion text.

The search tasks (multihop, searchqa) report these through their `extra_metrics` ability:
how the agent searches (from samples and train) and Search-R1's answer scores (from eval).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from selftrain.agent import (
    MATCHES,
    answer_matches,
    completion_actions,
    extract_answer,
    normalize_squad,
)
from selftrain.types import Query


def search_metrics(samples: pd.DataFrame, train: pd.DataFrame) -> dict[str, float | None]:
    """searches_per_traj, distinct_query_sets and invalid_action_rate of one round.

    searches_per_traj: mean search actions per accepted trajectory (rows of train).
    distinct_query_sets: mean, over queries with at least 2 accepted trajectories (as the
    other diversity figures), of the number of distinct sets of normalised search queries.
    invalid_action_rate: share of the turns of first-pass samples whose action did not parse.
    Undefined figures are None, as everywhere in the metrics.
    """
    accepted = [completion_actions(c) for c in train["completion"]]
    searches = [sum(a.kind == "search" for a in acts) for acts in accepted]
    sets_per_query: dict[str, set[frozenset[str]]] = {}
    counts: dict[str, int] = {}
    for qid, acts in zip(train["query_id"], accepted):
        queries = frozenset(normalize_squad(a.content) for a in acts if a.kind == "search")
        sets_per_query.setdefault(qid, set()).add(queries)
        counts[qid] = counts.get(qid, 0) + 1
    distinct = [len(sets_per_query[q]) for q, c in counts.items() if c >= 2]
    first_pass = samples[samples["origin"] == "sample"]
    turns = [a for c in first_pass["completion"] for a in completion_actions(c)]
    return {
        "searches_per_traj": sum(searches) / len(searches) if searches else None,
        "distinct_query_sets": sum(distinct) / len(distinct) if distinct else None,
        "invalid_action_rate": (sum(a.kind == "invalid" for a in turns) / len(turns)
                                if turns else None),
    }


def answer_metrics(evals: pd.DataFrame, test: Sequence[Query]) -> dict[str, float | None]:
    """em and subem of the test split: Search-R1's two scores of each eval completion's last
    <answer> against its query's `golden_answers`, re-read from the completion text.

    Averaged as pass@1 is: per query the share of its samples that match, then the mean over
    queries. A sample without an answer matches nothing. None when there are no eval rows.
    """
    if evals.empty:
        return {match: None for match in MATCHES}
    golds = {q.query_id: q.data["golden_answers"] for q in test}
    unknown = sorted(set(evals["query_id"]) - set(golds))
    if unknown:
        raise ValueError(f"eval.parquet has rows of {len(unknown)} queries that are not in the "
                         f"test split, e.g. {unknown[:3]}")
    answers = [extract_answer(c) for c in evals["completion"]]
    out: dict[str, float | None] = {}
    for match in MATCHES:
        hits = pd.Series([answer_matches(a, golds[q], match)
                          for a, q in zip(answers, evals["query_id"])], index=evals.index)
        out[match] = float(hits.groupby(evals["query_id"]).mean().mean())
    return out


def search_figures(*, samples: pd.DataFrame, train: pd.DataFrame, evals: pd.DataFrame,
                   test: Sequence[Query]) -> dict[str, float | None]:
    """The search tasks' `extra_metrics`: `search_metrics` of the round and `answer_metrics`
    of its test split."""
    return search_metrics(samples, train) | answer_metrics(evals, test)
