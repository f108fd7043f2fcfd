"""Metric functions on tiny hand-built run-folder frames; expected values are worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import BLEU

from selftrain.metrics import (
    DIVERSITY_METRICS,
    Embedder,
    correct_per_query,
    diversity_metrics,
    length_histogram,
    outcome_metrics,
    pass_at_k,
    tail_metrics,
)

# ---------------------------------------------------------------------------------------------
# Tail narrowing
# ---------------------------------------------------------------------------------------------

POOL = pd.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "difficulty": [1, 1, 2, 3]})


def _samples(rows: list[tuple[str, bool, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "correct", "origin"])


# K = 4 first-pass samples per query: q1 4 correct, q2 2, q3 1, q4 0. The refinement of q4 is
# correct but is not first-pass, so it must not count.
SAMPLES = _samples(
    [("q1", True, "sample")] * 4
    + [("q2", True, "sample")] * 2
    + [("q2", False, "sample")] * 2
    + [("q3", True, "sample")]
    + [("q3", False, "sample")] * 3
    + [("q4", False, "sample")] * 4
    + [("q4", True, "refine")]
)


def _train(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "origin"])


def test_tail_metrics_hand_computed():
    # A: q1 x3, q2 x2 (samples), q4 x1 (a refinement); q3 gets nothing. |A| = 6.
    train = _train([("q1", "sample")] * 3 + [("q2", "sample")] * 2 + [("q4", "refine")])
    m = tail_metrics(POOL, SAMPLES, train, num_samples=4)

    assert m["solve_rate_mean"] == pytest.approx(0.4375)  # (4/4 + 2/4 + 1/4 + 0/4) / 4
    assert m["coverage"] == pytest.approx(0.75)  # q1, q2, q4 of 4
    assert m["coverage@1"] == 1.0  # q1, q2 of {q1, q2}
    assert m["coverage@2"] == 0.0  # q3 has no row
    assert m["coverage@3"] == 1.0  # q4 via its refinement
    assert m["pool_share@1"] == 0.5  # 2 of 4 queries
    assert m["pool_share@2"] == 0.25
    assert m["pool_share@3"] == 0.25
    assert m["train_share@1"] == pytest.approx(5 / 6)  # 3 + 2 rows of 6
    assert m["train_share@2"] == 0.0
    assert m["train_share@3"] == pytest.approx(1 / 6)
    assert m["tail_ratio"] == pytest.approx(2 / 3)  # (1/6) / 0.25
    # Smoothed train shares: (count + 0.5) / (6 + 0.5 * 3 levels) = 5.5/7.5, 0.5/7.5, 1.5/7.5.
    kl = (
        0.5 * math.log(0.5 / (5.5 / 7.5))
        + 0.25 * math.log(0.25 / (0.5 / 7.5))
        + 0.25 * math.log(0.25 / (1.5 / 7.5))
    )
    assert m["narrowing_kl"] == pytest.approx(kl)
    assert m["train_size"] == 6
    # Rows per query [3, 2, 0, 1]: sum over ordered pairs of |x_i - x_j| = 2 * 10 = 20,
    # mean abs difference 20 / 16 = 1.25, mean 1.5 -> 1.25 / (2 * 1.5) = 5/12.
    assert m["train_per_query_gini"] == pytest.approx(5 / 12)
    assert m["refined_share"] == pytest.approx(1 / 6)
    json.dumps(m)  # plain Python numbers only


def test_tail_metrics_empty_training_set():
    m = tail_metrics(POOL, SAMPLES, _train([]), num_samples=4)
    assert m["train_size"] == 0
    assert m["coverage"] == 0.0
    assert all(m[f"train_share@{lv}"] == 0.0 for lv in (1, 2, 3))
    assert m["tail_ratio"] == 0.0
    assert m["refined_share"] == 0.0
    assert m["train_per_query_gini"] == 0.0  # all-zero counts are perfectly equal
    # Smoothed train shares are uniform: 0.5 / (0 + 1.5) = 1/3 per level.
    kl = 0.5 * math.log(0.5 / (1 / 3)) + 2 * 0.25 * math.log(0.25 / (1 / 3))
    assert m["narrowing_kl"] == pytest.approx(kl)


def test_tail_gini_one_query_holds_everything():
    train = _train([("q4", "sample")] * 5)
    m = tail_metrics(POOL, SAMPLES, train, num_samples=4)
    assert m["train_per_query_gini"] == pytest.approx(0.75)  # (n - 1) / n for n = 4
    assert m["tail_ratio"] == pytest.approx(4.0)  # 1.0 / 0.25: the hardest level over-represented


def test_tail_metrics_rejects_train_rows_outside_the_pool():
    with pytest.raises(ValueError, match="not in the round's pool"):
        tail_metrics(POOL, SAMPLES, _train([("q9", "sample")]), num_samples=4)


# ---------------------------------------------------------------------------------------------
# Outcome
# ---------------------------------------------------------------------------------------------


def _eval(rows: list[tuple[str, int, int, object, bool]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["query_id", "difficulty", "sample_idx", "answer", "correct"])
    df["completion"] = "..."
    return df


# n = 4 samples per test query, rows deliberately listed in reverse sample_idx order.
EVAL = _eval(
    [
        # qa: answers by sample_idx "1" "2" "1" "2" -> tie 2:2, "1" seen first -> correct. c = 2.
        # (Read in row order, "2" would come first: maj@n must sort by sample_idx.)
        ("qa", 1, 3, "2", False),
        ("qa", 1, 2, "1", True),
        ("qa", 1, 1, "2", False),
        ("qa", 1, 0, "1", True),
        # qb: no answer three times (None, NaN, None) beats "5" -> majority is "no answer". c = 1.
        ("qb", 1, 3, None, False),
        ("qb", 1, 2, float("nan"), False),
        ("qb", 1, 1, "5", True),
        ("qb", 1, 0, None, False),
        # qc: a query with no correct sample. c = 0.
        *[("qc", 2, i, "7", False) for i in range(4)],
        # qd: every sample correct. c = n = 4.
        *[("qd", 2, i, "3", True) for i in range(4)],
    ]
)


def test_outcome_metrics_hand_computed():
    m = outcome_metrics(EVAL, pass_ks=[1, 2, 4])
    assert m["pass@1"] == pytest.approx(0.4375)  # (2/4 + 1/4 + 0/4 + 4/4) / 4
    # pass@2 = 1 - C(4-c, 2) / C(4, 2): qa 1 - 1/6, qb 1 - 3/6, qc 0, qd 1 -> (5/6 + 1/2 + 1) / 4
    assert m["pass@2"] == pytest.approx(7 / 12)
    assert m["pass@4"] == pytest.approx(0.75)  # any correct among all 4: qa, qb, qd
    assert m["maj@4"] == pytest.approx(0.5)  # qa (tie won by "1") and qd
    assert m["acc@1"] == pytest.approx(0.375)  # (2/4 + 1/4) / 2
    assert m["acc@2"] == pytest.approx(0.5)  # (0 + 4/4) / 2
    assert set(m) == {"pass@1", "pass@2", "pass@4", "maj@4", "acc@1", "acc@2"}


def test_no_answer_majority_is_never_correct():
    # Even if a grader marked the no-answer rows correct, "no answer" wins and counts as wrong.
    df = _eval([("q", 1, 0, None, True), ("q", 1, 1, "", True), ("q", 1, 2, "x", False)])
    m = outcome_metrics(df, pass_ks=[1])
    assert m["maj@3"] == 0.0
    assert m["pass@1"] == pytest.approx(2 / 3)


def test_pass_at_k_edge_cases():
    assert pass_at_k(5, 0, 3) == 0.0  # c = 0
    assert pass_at_k(5, 5, 3) == 1.0  # c = n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)  # pass@1 = c / n
    exact = 1 - math.comb(190, 100) / math.comb(200, 100)
    assert pass_at_k(200, 10, 100) == pytest.approx(exact, rel=1e-12)


def test_k_above_n_is_an_error_naming_k_and_n():
    with pytest.raises(ValueError, match=r"pass@5 .*n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match=r"pass@8 .*n=4"):
        outcome_metrics(EVAL, pass_ks=[1, 8])


def test_outcome_needs_the_same_n_per_query():
    with pytest.raises(ValueError, match="same number of samples"):
        outcome_metrics(EVAL.iloc[1:], pass_ks=[1])


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def _accepted(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "completion"])


NO_SAMPLES = pd.DataFrame(columns=["query_id", "answer", "origin"])

# q1: two different 2-token completions, q2: one completion twice, q3: a single completion.
TEXTS = _accepted(
    [("q1", "A b"), ("q1", "a c"), ("q2", "x y z"), ("q2", "x y z"), ("q3", "solo words")]
)


_WORD_IDS: dict[str, int] = {}


def words(texts: list[str]) -> list[list[int]]:
    """Token ids of lower-cased whitespace words: tokens a fixture can count by hand."""
    return [[_WORD_IDS.setdefault(w, len(_WORD_IDS)) for w in t.lower().split()] for t in texts]


def _div(train: pd.DataFrame, enabled: set[str], **kw) -> dict:
    kw.setdefault("solution_key", None)
    kw.setdefault("token_ids", words)
    kw.setdefault("vocab_size", 10)
    return diversity_metrics(train, NO_SAMPLES, enabled=enabled, **kw)


def test_distinct_paths_default_and_custom_key():
    train = _accepted(
        [
            ("q1", "a = 1\nb = 2"),
            ("q1", "a=1\n  b=2  \n\n"),  # same steps up to whitespace and blank lines
            ("q1", "b = 2\na = 1"),  # same steps, other order: another path
            ("q2", "z"),
            ("q2", "z"),
            ("q3", "w"),  # one completion: not in the per-query mean
        ]
    )
    m = _div(train, {"distinct_paths"})
    assert m == {
        "distinct_paths": 1.5,  # q1: 2 keys, q2: 1 key -> (2 + 1) / 2
        "distinct_paths_queries": 2,  # q1 and q2: the mean is over them (q3 has 1 completion)
        "distinct_paths_pooled": 4.0,  # keys a=1|b=2, b=2|a=1, z, w over the whole round
    }
    # A task key that ignores step order; steps split on ";" instead of lines.
    m = _div(
        _accepted([("q1", "a;b"), ("q1", "b; a"), ("q2", "c"), ("q2", "c")]),
        {"distinct_paths"},
        solution_key=lambda steps: "|".join(sorted(steps)),
        split_steps=lambda text: [s.strip() for s in text.split(";")],
    )
    assert m == {"distinct_paths": 1.0, "distinct_paths_queries": 2,
                 "distinct_paths_pooled": 2.0}  # keys a|b, c


def test_distinct_n_and_ead_hand_computed():
    m = _div(TEXTS, {"distinct_n", "ead"}, vocab_size=10)
    # q1 tokens [a b] [a c]: 1-grams 3 unique / 4, 2-grams 2 / 2, no 3-/4-grams -> (3/4 + 1) / 2
    # q2 tokens [x y z] twice: 1-grams 3/6, 2-grams 2/4, 3-grams 1/2 -> 0.5 (identical: low)
    assert m["distinct_n"] == pytest.approx((0.875 + 0.5) / 2)
    # Pooled, all 5: 1-grams 8 unique / 12, 2-grams 5 / 7, 3-grams 1 / 2, no 4-grams.
    assert m["distinct_n_pooled"] == pytest.approx((8 / 12 + 5 / 7 + 1 / 2) / 3)

    def ead_n(n: int, unique: int, total: int, v: int = 10) -> float:
        """N / (S (1 - ((S-1)/S)^C)) with S = V^n, the number of possible n-grams."""
        space = v**n
        return unique / (space * (1 - ((space - 1) / space) ** total))

    q1 = (ead_n(1, 3, 4) + ead_n(2, 2, 2)) / 2  # 3/3.439 and 2/1.99
    q2 = (ead_n(1, 3, 6) + ead_n(2, 2, 4) + ead_n(3, 1, 2)) / 3  # 3/4.68559, 2/3.9404, 1/1.999
    assert m["ead"] == pytest.approx((q1 + q2) / 2)
    assert m["ead_pooled"] == pytest.approx(
        (ead_n(1, 8, 12) + ead_n(2, 5, 7) + ead_n(3, 1, 2)) / 3)

    # With a huge vocabulary the expectation adjustment vanishes: ead -> distinct_n.
    big = _div(TEXTS, {"distinct_n", "ead"}, vocab_size=10**9)
    assert big["ead"] == pytest.approx(big["distinct_n"], rel=1e-6)


def test_ngram_figures_count_the_policy_tokenizers_tokens():
    # Countdown's character tokenizer: "4*3=12" and "3*4=12" are 6 tokens each, one whitespace
    # word each. 1-grams: 6 unique {4 * 3 = 1 2} of 12; 2-grams: 8 of 10 (=1 and 12 shared);
    # 3-grams: 7 of 8 (=12 shared); 4-grams: 6 of 6.
    from selftrain.models.tiny_model import build_char_tokenizer

    tok = build_char_tokenizer()
    m = _div(_accepted([("q1", "4*3=12"), ("q1", "3*4=12")]), {"distinct_n", "ead"},
             token_ids=lambda texts: tok(texts, add_special_tokens=False)["input_ids"],
             vocab_size=len(tok))
    assert m["distinct_n"] == pytest.approx((6 / 12 + 8 / 10 + 7 / 8 + 6 / 6) / 4)

    def ead_n(n: int, unique: int, total: int) -> float:  # 101 characters: V^n n-grams
        space = len(tok) ** n
        return unique / (space * (1 - ((space - 1) / space) ** total))

    assert m["ead"] == pytest.approx(
        (ead_n(1, 6, 12) + ead_n(2, 8, 10) + ead_n(3, 7, 8) + ead_n(4, 6, 6)) / 4)
    assert m["distinct_n"] < m["ead"] < 1.0


def test_self_bleu_hand_computed_and_identical_completions():
    m = _div(TEXTS, {"self_bleu"})
    # q1 "a b" vs "a c": p1 = 1/2 = 50, p2: 0 of 1 matches -> exp smoothing 100 / (2 * 1) = 50;
    # effective order 2, equal lengths (BP 1): BLEU = exp((ln 50 + ln 50) / 2) = 50 -> 0.5,
    # the same both ways. q2 identical "x y z": p1..p3 = 100, effective order 3 -> 1.0.
    assert m["self_bleu"] == pytest.approx((0.5 + 1.0) / 2)
    assert _div(TEXTS[TEXTS.query_id == "q2"], {"self_bleu"})["self_bleu"] == pytest.approx(1.0)


def test_self_bleu_pooled_matches_sacrebleu_sentence_score():
    # Different lengths (brevity penalty, closest reference length, ties to the shorter one).
    texts = [
        "the cat sat on the mat",
        "The cat sat on a mat today",
        "a dog sat",
        "the the the cat",
        "",
        "mat on sat cat the",
    ]
    train = _accepted([(f"q{i}", t) for i, t in enumerate(texts)])
    bleu = BLEU(tokenize="none", effective_order=True)  # sacrebleu's sentence-level defaults
    lower = [t.lower() for t in texts]
    expected = np.mean(
        [
            bleu.sentence_score(h, [r for j, r in enumerate(lower) if j != i]).score / 100
            for i, h in enumerate(lower)
        ]
    )
    m = _div(train, {"self_bleu"})
    assert m["self_bleu"] is None  # every query has a single completion
    assert m["self_bleu_pooled"] == pytest.approx(expected, abs=1e-12)


class _TableEmbedder:
    """Stands in for MiniLM: a fixed vector per text, for hand-computable cosines."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([self.table[t] for t in texts], dtype=np.float32).reshape(len(texts), -1)


def test_embed_div_math_with_fixed_vectors():
    table = {"e1": [1.0, 0.0], "e2": [0.0, 1.0], "e3": [1.0, 0.0], "e4": [1.0, 0.0]}
    train = _accepted([("q1", "e1"), ("q1", "e2"), ("q2", "e3"), ("q2", "e4")])
    m = _div(train, {"embed_div"}, embedder=_TableEmbedder(table))
    assert m["embed_div"] == pytest.approx(0.5)  # q1: 1 - cos 0 = 1; q2: 1 - cos 1 = 0
    # Pooled pairs (12, 13, 14, 23, 24, 34) have cosines 0, 1, 1, 0, 0, 1 -> 1 - 3/6.
    assert m["embed_div_pooled"] == pytest.approx(0.5)


def test_embed_div_with_the_real_offline_minilm(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    same = "Add 3 and 4 to get 7, then multiply by 2 to get 14."
    train = _accepted(
        [
            ("q1", same),
            ("q1", same),
            ("q2", "The cat sleeps on the warm windowsill."),
            ("q2", "Quarterly revenue rose by ten percent."),
        ]
    )
    m = _div(train, {"embed_div"})
    emb = Embedder().encode(train["completion"].tolist())
    assert np.linalg.norm(emb, axis=1) == pytest.approx(1.0, abs=1e-5)
    cos = emb @ emb.T
    pairs = [cos[i, j] for i in range(4) for j in range(i + 1, 4)]
    q2 = 1 - cos[2, 3]
    assert q2 > 0.5  # unrelated sentences
    assert m["embed_div"] == pytest.approx((0.0 + q2) / 2, abs=1e-5)  # identical q1 -> ~0
    assert m["embed_div_pooled"] == pytest.approx(1 - np.mean(pairs), abs=1e-5)


def test_answer_entropy():
    samples = pd.DataFrame(
        [
            ("q1", "1", "sample"),
            ("q1", "1", "sample"),
            ("q1", "2", "sample"),
            ("q1", "2", "sample"),
            ("q2", None, "sample"),  # None, NaN and "" are one value: "none"
            ("q2", float("nan"), "sample"),
            ("q2", "", "sample"),
            ("q2", "3", "sample"),
            ("q3", "5", "sample"),
            ("q3", "6", "refine"),  # not first-pass
        ],
        columns=["query_id", "answer", "origin"],
    )
    m = diversity_metrics(
        _accepted([]), samples, solution_key=None, token_ids=words, vocab_size=10,
        enabled={"answer_entropy"},
    )
    q1 = math.log(2)  # two answers, 1/2 each
    q2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # "none" 3/4, "3" 1/4
    q3 = 0.0  # one answer
    assert m == {"answer_entropy": pytest.approx((q1 + q2 + q3) / 3)}


def test_undefined_figures_are_none_and_json_safe():
    everything_but_embed = DIVERSITY_METRICS - {"embed_div"}
    # No query has 2 completions: per-query figures are None, pooled ones still exist.
    m = _div(_accepted([("q1", "a b"), ("q2", "c d")]), everything_but_embed)
    assert m["distinct_paths"] is None and m["self_bleu"] is None
    assert m["distinct_paths_pooled"] == 2.0 and m["distinct_paths_queries"] == 0
    # Empty training set and no samples: everything is None (a mean over 0 queries).
    m = _div(_accepted([]), set(DIVERSITY_METRICS), embedder=_TableEmbedder({}))
    assert m.pop("distinct_paths_queries") == 0
    assert m and all(v is None for v in m.values())
    assert "NaN" not in json.dumps(m)


def test_disabled_metrics_are_not_computed():
    class _Refuses:
        def encode(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("embed_div was switched off")

    m = _div(TEXTS, {"distinct_paths"}, embedder=_Refuses())
    assert set(m) == {"distinct_paths", "distinct_paths_queries", "distinct_paths_pooled"}
    with pytest.raises(ValueError, match="unknown diversity metric"):
        _div(TEXTS, {"distinct_path"})


# ---------------------------------------------------------------------------------------------
# Histograms
# ---------------------------------------------------------------------------------------------


def test_length_histogram_in_characters():
    h = length_histogram(["ab", "abcd", "x" * 10], ["abcdef"], bins=[0, 3, 6])
    assert h["edges"] == [0.0, 3.0, 6.0]
    assert h["completions"] == [1, 2]  # 2 -> [0, 3); 4 -> [3, 6]; 10 clipped into the last bin
    assert h["references"] == [0, 1]  # 6 is the last edge, included
    h = length_histogram(["ab", "abcd"], ["abcdef"], bins=2)  # shared range 2..6
    assert h == {"edges": [2.0, 4.0, 6.0], "completions": [1, 1], "references": [0, 1]}


def test_correct_per_query_counts_first_pass_only():
    assert correct_per_query(SAMPLES, num_samples=4) == [1, 1, 1, 0, 1]  # q4 0, q3 1, q2 2, q1 4
    with pytest.raises(ValueError, match="more than num_samples"):
        correct_per_query(SAMPLES, num_samples=3)
