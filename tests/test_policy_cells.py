"""The policy's diversity figures as comparison cells: the per-query table and its figure
functions against hand-computed answers and against the round's own figures
(selftrain/metrics/policy.py), with and without resampling weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selftrain.metrics.policy import policy_diversity
from selftrain.metrics.policy_tables import ORDER, mean_of, policy_columns, policy_figures


class SameText:
    """A judge whose classes are the distinct texts."""

    name = "same-text"

    def classes(self, groups):
        out = []
        for g in groups:
            seen: dict[str, int] = {}
            out.append([seen.setdefault(t, len(seen)) for t in g])
        return out


def token_ids(texts):
    return [[ord(ch) for ch in t] for t in texts]


# Query a: 3 distinct texts, 3 passing in 2 classes; query b: 4 distinct, 1 passing.
EVALS = pd.DataFrame(
    [("a", 0, "1+1=2", True), ("a", 1, "1+1=2", True), ("a", 2, "2*1=2", True),
     ("a", 3, "xx", False), ("b", 0, "ab", True), ("b", 1, "bc", False), ("b", 2, "cd", False),
     ("b", 3, "de", False)], columns=["query_id", "sample_idx", "completion", "correct"])


def test_per_query_values_by_hand():
    table = policy_columns(EVALS, token_ids, SameText())
    assert list(table.index) == ["a", "b"]
    a, b = table.loc["a"], table.loc["b"]
    assert (a["policy/eval_classes"], b["policy/eval_classes"]) == (3, 4)
    assert (a["policy/eval_classes_passing"], b["policy/eval_classes_passing"]) == (2, 1)
    assert (a["policy/effective_div"], b["policy/effective_div"]) == (0.5, 0.25)
    # passing pairs in different classes over all pairs: a: (3 - 1) / 6; b: 0 / 6
    assert a["policy/passing_pair_div"] == pytest.approx(2 / 6) and b["policy/passing_pair_div"] == 0
    assert np.isnan(b["policy/eval_distinct_n_passing"])  # one passing sample: undefined
    assert mean_of("eval_classes")(table, None) == 3.5
    assert mean_of("eval_distinct_n_passing")(table, None) == a["policy/eval_distinct_n_passing"]


def test_the_plain_mean_is_the_rounds_figure_and_weights_draw_queries():
    judge = SameText()
    table = policy_columns(EVALS, token_ids, judge)
    whole = policy_diversity(EVALS, judge=judge, token_ids=token_ids,
                             enabled={"eval_distinct_n", *ORDER})
    figures = policy_figures([table])
    assert list(figures) == list(ORDER[:-1])  # the diversity figures, by default
    for key, fn in figures.items():
        assert fn(table, None) == pytest.approx(whole[key], rel=1e-12), key
    weights = np.array([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]])  # a alone, b twice, a twice + b
    got = mean_of("eval_classes")(table, weights)
    assert got == pytest.approx([3.0, 4.0, (2 * 3 + 4) / 3])
    passing = mean_of("eval_distinct_n_passing")(table, weights)
    assert passing[0] == table.loc["a", "policy/eval_distinct_n_passing"] and np.isnan(passing[1])


def test_without_a_judge_only_the_ngram_figures():
    table = policy_columns(EVALS, token_ids, None)
    assert list(policy_figures([table])) == ["eval_distinct_n", "eval_distinct_n_passing"]
    only = policy_columns(EVALS, token_ids, SameText(), keys=["eval_classes"])
    assert list(only.columns) == ["policy/eval_classes"]
    assert policy_figures([pd.DataFrame(index=["a"])]) == {}


def test_unknown_score_share_per_query():
    evals = EVALS.assign(score=[1.0, None, 0.5, 0.0, None, None, 1.0, 0.0])
    table = policy_columns(evals, token_ids, None, keys=["eval_unknown_score_share"])
    assert table["policy/eval_unknown_score_share"].to_dict() == {"a": 0.25, "b": 0.5}
    assert mean_of("eval_unknown_score_share")(table, None) == 3 / 8  # the pooled share
