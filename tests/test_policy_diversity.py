"""The policy's diversity on the test split (docs/metrics.md, "Diversity of the policy"):
hand-made eval tables whose figures are worked out by hand below, and a recomputation of
self-BLEU with sacrebleu itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sacrebleu

from selftrain.judges import JUDGES, JudgeLoadError, build_judge, classes_from_pairs
from selftrain.judges.builtin import EmbeddingJudge, SolutionKeyJudge
from selftrain.metrics.policy import POLICY_METRICS, policy_diversity

# query -> its samples (text, correct), in sample_idx order
TABLE = {
    "q1": [("a b", True), ("a c", True), ("a b", False)],
    "q2": [("x y z", False), ("x y z", False), ("w", True)],
    "q3": [("p", False), ("p", False), ("p", False)],
}
VECTORS = {"a b": [1, 0], "a c": [0, 1], "x y z": [1, 0], "w": [0.6, 0.8], "p": [1, 0]}


class TableEmbedder:
    """Unit vectors chosen by hand, so embed_div has a known value (MiniLM's own figures are
    checked in test_metrics.py)."""

    def encode(self, texts):
        return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def word_ids(texts):
    """Whitespace words as token ids: the n-grams below are counted in words."""
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in t.split()] for t in texts]


def eval_table() -> pd.DataFrame:
    rows = [{"query_id": q, "difficulty": 1, "sample_idx": j, "completion": text,
             "answer": None, "correct": ok}
            for q, samples in TABLE.items() for j, (text, ok) in enumerate(samples)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # row order must not matter


def test_every_figure_equals_its_hand_computation():
    out = policy_diversity(eval_table(), judge=SolutionKeyJudge(), token_ids=word_ids,
                           embedder=TableEmbedder())
    # distinct_n, mean over the orders that have n-grams:
    # q1 all: unigrams 3/6, bigrams 2/3; q2 all: 4/7, 2/4, 1/2; q3 all: 1/3
    assert out["eval_distinct_n"] == pytest.approx(((1/2 + 2/3) / 2 + (4/7 + 1/2 + 1/2) / 3 + 1/3) / 3)
    # passing groups with >= 2 samples: only q1's ("a b", "a c"): unigrams 3/4, bigrams 2/2
    assert out["eval_distinct_n_passing"] == pytest.approx((3/4 + 1) / 2)
    # embed_div = 1 - mean pairwise cosine: q1 cosines 0, 1, 0; q2 1, .6, .6; q3 all 1
    assert out["eval_embed_div"] == pytest.approx(((1 - 1/3) + (1 - 2.2/3) + 0) / 3)
    assert out["eval_embed_div_passing"] == pytest.approx(1.0)
    # classes by solution key: q1 {ab, ac}, q2 {xyz, w}, q3 {p}; passing: q1 2, q2 1, q3 0
    assert out["eval_classes"] == pytest.approx(5 / 3)
    assert out["eval_classes_passing"] == pytest.approx(1.0)
    assert out["effective_div"] == pytest.approx((2/3 + 1/3 + 0) / 3)
    # q1: of 3 pairs, 1 is passing and of two classes; q2, q3: none
    assert out["passing_pair_div"] == pytest.approx((1/3 + 0 + 0) / 3)

    def self_bleu(texts):  # sacrebleu itself, each text against the others of its group
        return np.mean([sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score / 100
                        for i, t in enumerate(texts)])

    groups = [[t for t, _ in samples] for samples in TABLE.values()]
    assert out["eval_self_bleu"] == pytest.approx(np.mean([self_bleu(g) for g in groups]))
    assert out["eval_self_bleu_passing"] == pytest.approx(self_bleu(["a b", "a c"]))


def test_disabled_figures_are_not_computed_and_undefined_ones_are_none():
    out = policy_diversity(eval_table(), judge=SolutionKeyJudge(), token_ids=word_ids,
                           enabled=POLICY_METRICS - {"eval_embed_div", "eval_self_bleu"})
    assert "eval_embed_div_passing" not in out and "eval_self_bleu" not in out
    none_pass = eval_table().assign(correct=False)
    out = policy_diversity(none_pass, judge=SolutionKeyJudge(), token_ids=word_ids,
                           embedder=TableEmbedder())
    assert out["eval_distinct_n_passing"] is None and out["eval_embed_div_passing"] is None
    assert out["eval_classes_passing"] == 0 and out["effective_div"] == 0
    assert out["passing_pair_div"] == 0


def test_pair_judges_join_chains_of_equivalent_pairs():
    # a~b and b~c but not a~c: one class (connected components), d alone
    same_pairs = {("a", "b"), ("b", "c")}
    asked = []

    def same(pairs):
        asked.extend(pairs)
        return [p in same_pairs for p in pairs]

    groups = [["a", "b", "c", "d", "a"], ["c", "a"], ["d", "b", "c"]]
    assert classes_from_pairs(groups, same) == [[0, 0, 0, 1, 0], [0, 1], [0, 1, 1]]
    assert len(asked) == len(set(asked)) == 6  # each distinct pair once, across groups

    judge = EmbeddingJudge(threshold=0.7, embedder=TableEmbedder())
    # cos(a b, w) = .6 < .7, cos(a c, w) = .8: "a c" ~ "w"; "a b" and "a c" orthogonal
    assert judge.classes([["a b", "a c", "w", "x y z"]]) == [[0, 1, 1, 0]]


def test_judges_are_found_by_name_and_a_typo_lists_them():
    assert {"solution-key", "embedding", "classifier", "lm"} <= set(JUDGES.names())
    assert isinstance(build_judge("solution-key", None, {}, task=None), SolutionKeyJudge)
    with pytest.raises(JudgeLoadError, match="known judges: .*classifier.*solution-key"):
        build_judge("solution_key", None, {}, task=None)
    with pytest.raises(JudgeLoadError, match="threshold"):
        build_judge("embedding", None, {"threshold": 2.0}, task=None)
