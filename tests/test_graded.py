"""Graded tasks (selftrain/tasks/graded.py) on the embedded lexicon-lines task: its constraints
and breadth, the distinctiveness term, passing = score >= threshold in samples and eval rows,
the top-m filter, and the score_mean figures recomputed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import REPO

from selftrain.arms.arm import Arm
from selftrain.backends import Generation
from selftrain.config import ArmConfig, ConfigError, load_config
from selftrain.loop.stages import make_sample
from selftrain.metrics import score_metrics
from selftrain.registry import RegistryError
from selftrain.runfolder.schemas import read_samples
from selftrain.tasks import abilities, make_task
from selftrain.tasks.graded import passes, sample_score, scores
from selftrain.tasks.lexicon_lines import LETTERS, TOPICS, build_lexicon
from selftrain.types import Query

Q = Query("q", 2, "sea: b d\n", {"topic": "sea", "letters": "bd"})


def task(**kw):
    return make_task("lexicon_lines", seed=0, train_per_level=4, test_per_level=2, **kw)


def words(t, letter, topic="sea"):
    return t.lexicon[(topic, letter)]


def test_breadth_is_the_number_of_words_per_cell_and_broader_only_adds_words():
    narrow, broad = task(breadth=1), task(breadth=8)
    for topic in TOPICS:
        for letter in LETTERS:
            cell = broad.lexicon[(topic, letter)]
            assert len(cell) == 8 and len(set(cell)) == 8
            assert all(w.startswith(letter) for w in cell)
            assert narrow.lexicon[(topic, letter)] == cell[:1]
    everything = [w for ws in build_lexicon(0).values() for w in ws]
    assert len(everything) == len(set(everything))  # no word in two cells


def test_score_is_the_share_of_constraints_met():
    t = task(breadth=4)
    b, d = words(t, "b")[0], words(t, "d")[1]
    other_topic_d = words(t, "d", "city")[0]
    # 2 words: 3 constraints per slot + the word count = 7
    assert t.score(Q, f"{b} {d}\n") == 1.0
    assert t.is_correct(Q, f"{b} {d}")
    assert t.score(Q, f"{b} {other_topic_d}\n") == pytest.approx(6 / 7)  # topic missed
    assert t.score(Q, f"{d} {b}\n") == pytest.approx(5 / 7)  # both letters missed
    assert t.score(Q, f"{b} {b}\n") == pytest.approx(5 / 7)  # letter and repeat in slot 2
    assert t.score(Q, f"{b}\n") == pytest.approx(3 / 7)  # count and all of slot 2
    assert t.score(Q, "\n") == 0.0
    assert not t.is_correct(Q, f"{b} {other_topic_d}")
    assert task(breadth=4, pass_threshold=0.8).is_correct(Q, f"{b} {other_topic_d}")


def test_breadth_one_leaves_one_passing_line_and_breadth_four_sixteen():
    for breadth, n in ((1, 1), (4, 16)):
        t = task(breadth=breadth)
        lines = {f"{x} {y}" for x in words(t, "b") for y in words(t, "d")}
        assert len(lines) == n and all(t.score(Q, line) == 1.0 for line in lines)
        refs = t.reference_solutions(Q, k=4)
        assert len(refs) == min(4, n) and all(t.is_correct(Q, r) for r in refs)


def test_distinctiveness_rewards_words_the_other_samples_of_the_prompt_do_not_use():
    t = task(breadth=4, distinct_weight=0.5)
    b0, b1 = words(t, "b")[:2]
    d0, d1 = words(t, "d")[:2]
    lines = [f"{b0} {d0}", f"{b0} {d0}", f"{b1} {d1}", f"{b0} {words(t, 'd', 'city')[0]}"]
    got = scores(t, Q, lines)
    # others = 3; b0 is used by 3 lines, d0 by 2, b1, d1 and the city word by 1
    r0 = ((1 - 2 / 3) + (1 - 1 / 3)) / 2
    r3 = ((1 - 2 / 3) + 1) / 2
    assert got == pytest.approx([0.5 + 0.5 * r0, 0.5 + 0.5 * r0, 1.0, 6 / 7 * (0.5 + 0.5 * r3)])
    assert t.score(Q, lines[0]) == 1.0  # alone: nobody else uses its words
    assert task(breadth=4).score_batch(Q, lines) == [t.quality(Q, x) for x in lines]


def test_graded_samples_are_correct_when_they_pass_and_keep_their_score(tmp_path):
    t = task(breadth=4, distinct_weight=0.5, pass_threshold=0.7)
    b0, d0, d1 = words(t, "b")[0], *words(t, "d")[:2]
    texts = [f"{b0} {d0}", f"{b0} {d0}", f"{b0} {d1}"]
    marks = scores(t, Q, texts)
    samples = [make_sample(t, Q, f"r0-q-s{j}", Generation(x, 3), score=m)
               for j, (x, m) in enumerate(zip(texts, marks))]
    assert [s.score for s in samples] == pytest.approx(marks)
    assert marks == pytest.approx([0.625, 0.625, 0.75])  # b0 shared by all, d0 by two
    assert [s.correct for s in samples] == [False, False, True]
    assert passes(t, None) is False
    # refinements are scored alone
    refined = make_sample(t, Q, "r0-q-s0-a0", Generation(f"{b0} {d0}", 3), origin="refine")
    assert refined.score == 1.0 and refined.correct
    # the score survives samples.parquet; an ungraded task's rows read back None
    path = tmp_path / "samples.parquet"
    pd.DataFrame([s.row() for s in samples]).to_parquet(path)
    assert [sample_score(s) for s in read_samples(path)] == pytest.approx(marks)
    cd = make_task("countdown", seed=0, levels=[2], train_per_level=2, test_per_level=1)
    assert abilities(cd).graded is None and scores(cd, Q, ["x"]) is None


def _graded_samples(t):
    b = words(t, "b")
    d = words(t, "d")
    texts = [f"{b[0]} {d[0]}", f"{b[0]} {words(t, 'd', 'city')[0]}", f"{b[1]} {d[1]}",
             f"{d[0]}", f"{b[2]} {d[2]}"]
    marks = [0.4, 0.9, 0.7, 0.1, None]  # hand-set scores: the filter reads only these
    return [make_sample(t, Q, f"r0-q-s{j}", Generation(x, 3), score=m)
            for j, (x, m) in enumerate(zip(texts, marks))]


def test_top_m_filter_keeps_the_m_best_scores_of_a_query_passing_or_not():
    t = task(breadth=4, pass_threshold=0.6)
    samples = _graded_samples(t)
    arm = Arm.of(ArmConfig(name="top_m", top_m=2))
    kept = arm.select([Q], samples, {}, arm.partition(t.solution_key), 5)
    assert [s.sample_id for s in kept] == ["r0-q-s1", "r0-q-s2"]  # 0.9 and 0.7, in sample order
    # rs keeps what passes (0.9, 0.7 >= 0.6); with top_m=1 only the best of those
    rs = Arm.of(ArmConfig(name="rs"))
    assert [s.sample_id for s in rs.select([Q], samples, {}, rs.partition(t.solution_key), 5)] == \
        ["r0-q-s1", "r0-q-s2"]
    rs1 = Arm.of(ArmConfig(name="rs", top_m=1))
    assert [s.sample_id for s in rs1.select([Q], samples, {}, rs.partition(t.solution_key), 5)] == \
        ["r0-q-s1"]
    # per_query_cap still bounds it
    capped = Arm.of(ArmConfig(name="top_m", top_m=3, per_query_cap=1))
    assert len(capped.select([Q], samples, {}, capped.partition(t.solution_key), 5)) == 1


def test_top_m_needs_its_number():
    with pytest.raises(RegistryError, match="arm.top_m"):
        Arm.of(ArmConfig(name="top_m"))
    with pytest.raises(ConfigError, match="top_m"):
        load_config(REPO / "configs" / "countdown_rs.yaml", ["arm.top_m=0"])


def test_score_mean_is_the_mean_over_queries_of_their_mean_known_score():
    rows = [("a", 1, 1.0), ("a", 1, 0.5), ("b", 1, 0.0), ("b", 1, None), ("c", 2, 0.25),
            ("c", 2, 0.75), ("d", 2, None)]
    df = pd.DataFrame(rows, columns=["query_id", "difficulty", "score"])
    got = score_metrics(df)
    # a: 0.75, b: 0.0 (its unknown left out), c: 0.5, d: no known score, left out
    assert got == pytest.approx({"score_mean": 1.25 / 3, "score_mean@1": 0.375,
                                 "score_mean@2": 0.5})
    assert score_metrics(df.assign(score=None)) == {}
    assert score_metrics(df.drop(columns="score")) == {}
    assert not any(math.isnan(v) for v in got.values())
