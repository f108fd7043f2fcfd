"""Preference pairs built from hand-made samples and critiques: outcome pairs, step pairs from
verified `resume` repairs, diversity-aware choice of the chosen side, and the pair figures."""

from __future__ import annotations

import pandas as pd
import pytest

from critics import Critique, StepVerdict
from selftrain.arms.pairs import build_pairs
from selftrain.arms.parts import Partition
from selftrain.config import from_dict
from selftrain.metrics.pairs import pair_metrics
from selftrain.types import Sample

PARTITION = Partition(key=lambda steps: steps[0] if steps else "")  # class: the first step


def sample(sid: str, query: str, text: str, correct: bool, origin: str = "sample",
           parent: str | None = None) -> Sample:
    return Sample(sample_id=sid, query_id=query, difficulty=int(query[-1]), prompt=f"<{query}>",
                  completion=text, steps=[ln for ln in text.splitlines() if ln], answer=None,
                  correct=correct, origin=origin, parent_id=parent)


def crit(s: Sample, first_error: int = -1) -> Critique:
    oks = [first_error < 0 or i < first_error for i in range(len(s.steps))]
    return Critique(s.sample_id, "hand", [StepVerdict(ok, float(ok)) for ok in oks])


def config(arm: str = "rs", selection: str = "all", cap: int = 4, step_pairs: str = "continuation"):
    return from_dict({"arm": {"name": arm, "selection": selection},
                      "critic": {"name": "countdown-oracle"},
                      "train": {"objective": "dpo",
                                "dpo": {"pairs_per_query": cap, "step_pairs": step_pairs}}})


def rows(pairs) -> list[tuple]:
    return [(p.query_id, p.origin, p.chosen_id, p.rejected_id) for p in pairs]


def test_outcome_pairs_use_every_sample_before_repeating_and_skip_one_sided_queries():
    samples = [sample("a0", "qa1", "x\n", True), sample("a1", "qa1", "y\n", False),
               sample("a2", "qa1", "z\n", True), sample("a3", "qa1", "w\n", False),
               sample("a4", "qa1", "v\n", False),
               sample("b0", "qb1", "x\n", True), sample("b1", "qb1", "x2\n", True),  # all correct
               sample("c0", "qc2", "y\n", False), sample("c1", "qc2", "y2\n", False)]  # all wrong
    pairs = build_pairs(config(), samples, {}, PARTITION)
    assert rows(pairs) == [("qa1", "outcome", "a0", "a1"), ("qa1", "outcome", "a2", "a3"),
                           ("qa1", "outcome", "a0", "a4")]
    assert (pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == ("<qa1>", "x\n", "y\n")
    assert len(build_pairs(config(cap=2), samples, {}, PARTITION)) == 2


def test_diverse_choice_puts_the_rarest_solution_class_on_the_chosen_side():
    samples = [sample("s0", "q1", "A\n1\n", True), sample("s1", "q1", "A\n2\n", True),
               sample("s2", "q1", "B\n1\n", True), sample("s3", "q1", "C\n", False)]
    assert rows(build_pairs(config(cap=1), samples, {}, PARTITION))[0][2] == "s0"
    assert rows(build_pairs(config(selection="diverse", cap=1), samples, {}, PARTITION))[0][2] == "s2"


def step_round():
    """q1: root r0 wrong at its second step, repaired at once. q2: root t0 repaired on the
    second attempt (the first repair t0-a0 goes wrong at its third step). q3: repairs that fail
    their check (wrong answer; right answer but the critic objects)."""
    r0 = sample("r0", "q1", "1+2=3\n3*4=13\n13-1=12", False)
    r0a = sample("r0-a0", "q1", "1+2=3\n3*4=12\n12-1=11\n", True, "refine", "r0")
    t0 = sample("t0", "q2", "5-1=4\n4*3=11", False)
    t0a0 = sample("t0-a0", "q2", "5-1=4\n4*3=12\n12+1=14\n", False, "refine", "t0")
    t0a1 = sample("t0-a1", "q2", "5-1=4\n4*3=12\n12+2=14\n", True, "refine", "t0")
    u0 = sample("u0", "q3", "2+2=5", False)
    u0a0 = sample("u0-a0", "q3", "2+2=6\n", False, "refine", "u0")
    u0a1 = sample("u0-a1", "q3", "2+2=4\n", True, "refine", "u0")
    samples = [r0, t0, u0, r0a, t0a0, u0a0, t0a1, u0a1]
    critiques = {c.sample_id: c for c in [
        crit(r0, 1), crit(r0a), crit(t0, 1), crit(t0a0, 2), crit(t0a1), crit(u0, 0),
        crit(u0a0, 0), crit(u0a1, 0)]}
    return samples, critiques


def test_step_pairs_start_at_the_first_error_of_the_attempt_each_repair_fixed():
    samples, critiques = step_round()
    pairs = build_pairs(config(arm="critique"), samples, critiques, PARTITION)
    assert rows(pairs) == [("q1", "step", "r0-a0", "r0"), ("q2", "step", "t0-a1", "t0-a0")]
    q1, q2 = pairs
    assert (q1.prompt, q1.chosen, q1.rejected) == ("<q1>1+2=3\n", "3*4=12\n12-1=11\n",
                                                  "3*4=13\n13-1=12")
    assert (q2.prompt, q2.chosen, q2.rejected) == ("<q2>5-1=4\n4*3=12\n", "12+2=14\n",
                                                  "12+1=14\n")
    first = build_pairs(config(arm="critique", step_pairs="first_step"), samples, critiques,
                        PARTITION)
    assert (first[0].chosen, first[0].rejected) == ("3*4=12\n", "3*4=13\n")


def test_a_critique_arm_adds_outcome_pairs_whose_chosen_side_the_critic_passes():
    good, flawed = sample("g", "q1", "1+2=3\n", True), sample("f", "q1", "9+9=3\n", True)
    bad = sample("b", "q1", "1+1=3\n", False)
    critiques = {"g": crit(good), "f": crit(flawed, 0), "b": crit(bad, 0)}
    pairs = build_pairs(config(arm="critique"), [flawed, good, bad], critiques, PARTITION)
    assert rows(pairs) == [("q1", "outcome", "g", "b")]
    rs = build_pairs(config(arm="rs"), [flawed, good, bad], critiques, PARTITION)
    assert [p.chosen_id for p in rs] == ["f", "g"]


def test_rewrite_refinements_make_no_step_pairs():
    samples, critiques = step_round()
    cfg = config(arm="critique")
    cfg.refine.mode = "rewrite"
    assert [p.origin for p in build_pairs(cfg, samples, critiques, PARTITION)] == []


def test_pair_figures_equal_a_hand_count():
    pool = pd.DataFrame({"query_id": ["q1", "q2", "q3", "q4"], "difficulty": [1, 1, 2, 2]})
    samples = pd.DataFrame({"query_id": ["q1"], "origin": ["sample"], "correct": [True]})
    pairs = pd.DataFrame({"query_id": ["q1", "q1", "q3"], "origin": ["step", "outcome", "outcome"]})
    got = pair_metrics(pool, samples, pairs)
    # hardest level 2: 1 of 3 pairs, half the pool -> (1/3) / (1/2)
    assert got == pytest.approx({"pairs": 3, "pair_coverage@1": 0.5, "pair_coverage@2": 0.5,
                                 "pair_tail_ratio": 2 / 3, "step_pair_share": 1 / 3})
    empty = pair_metrics(pool, samples, pairs.iloc[:0])
    assert empty["pairs"] == 0 and empty["pair_tail_ratio"] == 0 and empty["step_pair_share"] == 0


def test_every_pair_and_dpo_figure_is_defined_in_docs_metrics_md():
    from test_metrics_doc import doc_name, documented_keys

    from selftrain.train.dpo import FIGURES

    pool = pd.DataFrame({"query_id": ["q1", "q2"], "difficulty": [1, 3]})
    samples = pd.DataFrame({"query_id": ["q1"], "origin": ["sample"], "correct": [True]})
    pairs = pd.DataFrame({"query_id": ["q1"], "origin": ["step"]})
    keys = {doc_name(k) for k in pair_metrics(pool, samples, pairs)} | set(FIGURES)
    assert keys >= {"pair_coverage@L", "train/rewards/margins"}
    assert not keys - documented_keys()
