"""Preference pairs on a graded task, from hand-made scored samples: sides by score at least
`train.dpo.score_margin` apart, ties and unknown scores never in a pair, and dpo_diverse's
chosen side preferring the rarest passing solution class."""

from __future__ import annotations

import pytest

from selftrain.arms.pairs import build_pairs
from selftrain.arms.parts import Partition
from selftrain.config import ConfigError, from_dict
from selftrain.types import Sample

PARTITION = Partition(key=lambda steps: steps[0] if steps else "")  # class: the first word
THRESHOLD = 0.75  # passing (correct) = score >= 0.75, as a graded task marks it


def sample(sid: str, query: str, words: str, score: float | None) -> Sample:
    return Sample(sample_id=sid, query_id=query, difficulty=2, prompt=f"<{query}>",
                  completion=words + "\n", steps=words.split(), answer=words,
                  correct=score is not None and score >= THRESHOLD, score=score)


def config(selection: str = "all", margin: float | None = None, cap: int = 8, arm: str = "rs"):
    dpo = {"pairs_per_query": cap} | ({} if margin is None else {"score_margin": margin})
    extra = {"top_m": 2} if arm == "top_m" else {}
    return from_dict({"arm": {"name": arm, "selection": selection, **extra},
                      "train": {"objective": "dpo", "dpo": dpo}})


def sides(pairs) -> list[tuple[str, str]]:
    return [(p.chosen_id, p.rejected_id) for p in pairs]


def test_chosen_is_the_higher_score_by_at_least_the_margin():
    """Passing (score >= 0.75): a 1.0, d 0.9, b 0.8; failing: c 0.7, e 0.2. Default margin 0.1.
    Candidates highest first (a, d, b); the rejected pool is every sample at least 0.1 below
    the best candidate, lowest first: e, c, b, d. Candidate i mod 3 takes the first pool sample
    from position i mod 4 on that is 0.1 below it: a-e, d-c, b-e (b is not below itself, d is
    above it), a-d (1.0 - 0.9 is 0.1 up to float rounding: it counts)."""
    samples = [sample("a", "q", "x y", 1.0), sample("b", "q", "x z", 0.8),
               sample("c", "q", "w y", 0.7), sample("d", "q", "v y", 0.9),
               sample("e", "q", "u u", 0.2)]
    pairs = build_pairs(config(), samples, {}, PARTITION)
    assert sides(pairs) == [("a", "e"), ("d", "c"), ("b", "e"), ("a", "d")]
    assert (pairs[1].prompt, pairs[1].chosen, pairs[1].rejected, pairs[1].origin) == (
        "<q>", "v y\n", "w y\n", "outcome")
    assert sides(build_pairs(config(margin=0.5), samples, {}, PARTITION)) == [
        ("a", "e"), ("d", "e"), ("b", "e")]


def test_the_exact_pairs_of_a_pass_fail_split_match_outcome_pairs_rule():
    """Margin 0.2, every candidate (a 1.0, b 0.85) that far above every other sample: candidate
    i mod C against pool sample i mod W (lowest first: f 0.1, g 0.3, h 0.5), each sample used
    once before any repeats."""
    samples = [sample("a", "q", "x y", 1.0), sample("h", "q", "x", 0.5),
               sample("b", "q", "z y", 0.85), sample("f", "q", "", 0.1),
               sample("g", "q", "y y", 0.3)]
    assert sides(build_pairs(config(margin=0.2), samples, {}, PARTITION)) == [
        ("a", "f"), ("b", "g"), ("a", "h")]
    assert sides(build_pairs(config(margin=0.2, cap=2), samples, {}, PARTITION)) == [
        ("a", "f"), ("b", "g")]


def test_ties_all_equal_scores_and_unknown_scores_are_never_in_a_pair():
    tie = [sample("a", "q1", "x y", 1.0), sample("b", "q1", "x z", 1.0)]  # all equal: no pair
    near = [sample("c", "q2", "x y", 0.8), sample("d", "q2", "x z", 0.75),  # both pass, 0.05 apart
            sample("e", "q2", "x w", 0.72)]                                  # 0.08 below c
    unknown = [sample("f", "q3", "x y", 1.0), sample("g", "q3", "a b", None),
               sample("h", "q3", "a c", None)]  # the only lower samples are unknown
    mixed = [sample("i", "q4", "x y", None), sample("j", "q4", "x z", 0.9),
             sample("k", "q4", "a b", 0.0), sample("l", "q4", "a c", None)]
    pairs = build_pairs(config(), tie + near + unknown + mixed, {}, PARTITION)
    assert sides(pairs) == [("j", "k")]
    assert build_pairs(config(margin=0.0), tie, {}, PARTITION) == []  # margin 0: still no tie
    assert sides(build_pairs(config(margin=0.0), near, {}, PARTITION)) == [("c", "e"), ("d", "e")]


def test_top_m_filter_may_choose_a_failing_sample_above_a_worse_one():
    samples = [sample("a", "q", "x y", 0.6), sample("b", "q", "x z", 0.3),
               sample("c", "q", "w", None)]
    assert sides(build_pairs(config(arm="top_m"), samples, {}, PARTITION)) == [("a", "b")]
    assert build_pairs(config(), samples, {}, PARTITION) == []  # rs: nothing passes


def test_dpo_diverse_chooses_the_rarest_passing_class_first():
    """Passing: a, b (class x, scores 1.0 and 0.95) and c (class w, 0.8). Without diverse
    selection the highest score is chosen first; with it, c's class (one member) comes first."""
    samples = [sample("a", "q", "x y", 1.0), sample("b", "q", "x z", 0.95),
               sample("c", "q", "w y", 0.8), sample("d", "q", "v v", 0.1)]
    assert sides(build_pairs(config(cap=1), samples, {}, PARTITION)) == [("a", "d")]
    assert sides(build_pairs(config(selection="diverse", cap=1), samples, {}, PARTITION)) == [
        ("c", "d")]
    assert [c for c, _ in sides(build_pairs(config(selection="diverse"), samples, {},
                                            PARTITION))] == ["c", "a", "b"]


def test_an_ungraded_task_keeps_pass_fail_pairs():
    """No score on any sample: the pairs are outcome_pairs' (correct against wrong)."""
    samples = [Sample(sample_id=s, query_id="q", difficulty=1, prompt="p", completion=s,
                      steps=[s], answer=s, correct=ok) for s, ok in
               [("a", True), ("b", False), ("c", False)]]
    assert sides(build_pairs(config(), samples, {}, PARTITION)) == [("a", "b"), ("a", "c")]


@pytest.mark.parametrize("margin", [-0.1, 1.5])
def test_a_margin_outside_the_score_range_is_a_config_error(margin):
    with pytest.raises(ConfigError, match="train.dpo.score_margin must lie in"):
        config(margin=margin)


def test_dpo_diverse_counts_repeated_lines_in_a_class_s_rarity():
    """The policy wrote line x three times (a, b, c) and line w once (d): w is the rarer
    solution, although once repeats are dropped each line is one candidate."""
    samples = [sample("a", "q", "x y", 1.0), sample("b", "q", "x y", 1.0),
               sample("c", "q", "x y", 1.0), sample("d", "q", "w y", 1.0),
               sample("e", "q", "v v", 0.1)]
    assert sides(build_pairs(config(), samples, {}, PARTITION)) == [("a", "e"), ("d", "e")]
    assert sides(build_pairs(config(selection="diverse"), samples, {}, PARTITION)) == [
        ("d", "e"), ("a", "e")]
