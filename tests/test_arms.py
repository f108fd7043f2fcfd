"""The arms' sampling and selection on hand-made countdown samples (selftrain/arms/parts.py): solution
classes, diverse selection, balanced targets, the waves of adaptive sampling and their caps."""

from __future__ import annotations

import pytest
from conftest import REPO

from critics import build_critic
from selftrain.arms import parts as arms
from selftrain.arms.arm import Arm
from selftrain.arms.registry import FILTERS, SAMPLINGS, register_filter
from selftrain.backends import Generation
from selftrain.config import ArmConfig, BalancedConfig, ConfigError, load_config
from selftrain.loop.checks import checked_arm, preflight
from selftrain.loop.stages import make_sample, requests_for
from selftrain.metrics.diversity import default_solution_key
from selftrain.tasks import make_task
from selftrain.types import Query, Sample

TASK = make_task("countdown", seed=0, levels=[2, 3, 4], train_per_level=4, test_per_level=2)
# 3 4 2 -> 14 has two solution paths; the first two completions are one path (operands swapped)
Q = Query("q", 3, "3 4 2 -> 14\n", {"numbers": [3, 4, 2], "target": 14})
PATH_A, PATH_A_SWAPPED, PATH_B = "3*4=12\n12+2=14\n", "4*3=12\n2+12=14\n", "3+4=7\n7*2=14\n"
WRONG = "3+2=5\n5*4=20\n"


def sample(query: Query, j: int, text: str, origin: str = "sample", tokens: int = 10):
    return make_sample(TASK, query, f"r0-{query.query_id}-s{j}", Generation(text, tokens),
                       origin=origin)


def partition(similarity=None) -> arms.Partition:
    return arms.Partition(TASK.solution_key, similarity)


def test_the_hand_made_samples_are_what_they_claim():
    texts = [PATH_A, PATH_A_SWAPPED, PATH_B, WRONG]
    assert [TASK.is_correct(Q, t) for t in texts] == [True, True, True, False]
    keys = [TASK.solution_key(TASK.split_steps(t)) for t in texts]
    assert keys[0] == keys[1] != keys[2]


def test_three_correct_samples_in_two_classes_with_cap_two_give_one_of_each():
    samples = [sample(Q, 0, PATH_A), sample(Q, 1, PATH_A_SWAPPED), sample(Q, 2, WRONG),
               sample(Q, 3, PATH_B)]
    kept = Arm.of(ArmConfig(name="rs")).filter.eligible(samples, {})
    classes = partition()(arms.by_query(kept))["q"]
    assert [[s.sample_id for s in c] for c in classes] == [["r0-q-s0", "r0-q-s1"], ["r0-q-s3"]]
    ranked = {"q": arms.diverse_order(classes)}
    chosen = arms.take(kept, ranked, lambda q: 2)
    assert [s.sample_id for s in chosen] == ["r0-q-s0", "r0-q-s3"]
    # selection `all` keeps sample order: the cap then takes two repeats of one path
    assert [s.sample_id for s in arms.take(kept, arms.by_query(kept), lambda q: 2)] == \
        ["r0-q-s0", "r0-q-s1"]


def test_diverse_order_takes_every_class_once_before_any_repeat_rarest_first():
    big = [sample(Q, i, PATH_A) for i in range(3)]
    small = [sample(Q, 10, PATH_B)]
    mid = [sample(Q, 20 + i, "x\n") for i in range(2)]
    order = arms.diverse_order([big, mid, small])
    assert [s.sample_id for s in order] == ["r0-q-s10", "r0-q-s20", "r0-q-s0", "r0-q-s21",
                                            "r0-q-s1", "r0-q-s2"]
    assert arms.diverse_order([]) == []


def test_similar_free_text_merges_into_one_class_with_the_real_minilm():
    texts = ["The answer is Paris, the capital of France.",
             "Paris is the capital of France, so the answer is Paris.",
             "Seven times six is forty-two."]
    group = {"f": [Sample(f"f-s{i}", "f", 1, "What is the capital of France?\n", t, [t], None,
                          True) for i, t in enumerate(texts)]}
    by_key = arms.Partition(default_solution_key)(group)["f"]
    assert len(by_key) == 3  # free-text keys never repeat
    merged = arms.Partition(default_solution_key, similarity=0.8)(group)["f"]
    assert [[s.sample_id for s in c] for c in merged] == [["f-s0", "f-s1"], ["f-s2"]]


@pytest.mark.parametrize("mode, want", [("uniform", {2: 4, 3: 4, 4: 4}),
                                        ("prop2diff", {2: 2, 3: 3, 4: 4})])
def test_balanced_targets_per_level(mode, want):
    levels = {q.query_id: q.difficulty for q in TASK.queries("train")}
    targets = arms.balanced_targets(levels, mode, 4)
    assert {levels[q]: t for q, t in targets.items()} == want
    # a level far below the hardest still wants at least one correct sample
    assert arms.balanced_targets({"a": 1, "b": 10}, "prop2diff", 3) == {"a": 1, "b": 3}


class Policy:
    """Hand-made waves: query `easy` is solved by every sample, `hard` by none, `rare` by one
    sample in three; each query's samples have a fixed length in tokens (10 unless given).
    Records what each wave asked for."""

    def __init__(self, tokens: dict[str, int] | None = None):
        self.tokens, self.calls = tokens or {}, []

    def __call__(self, queries: list[Query], first_index: int, k: int = 4) -> list:
        self.calls.append(([q.query_id for q in queries], first_index))
        out = []
        for q in queries:
            for j in range(first_index, first_index + k):
                text = {"easy": PATH_A, "hard": WRONG,
                        "rare": PATH_B if j % 3 == 0 else WRONG}[q.query_id]
                out.append(sample(q, j, text, "sample" if first_index == 0 else "extra",
                                  self.tokens.get(q.query_id, 10)))
        return out


POOL = [Query(name, level, Q.prompt, Q.data) for name, level in
        (("easy", 2), ("rare", 3), ("hard", 4))]


def run_waves(sampling, budget=None, max_waves=5, tokens=None):
    policy = Policy(tokens)
    first = policy(POOL, 0)
    extra, waves = arms.sample_waves(POOL, first, sampling, policy, 4, max_waves, budget)
    return first, extra, waves, policy.calls


def test_balanced_waves_stop_at_the_target_or_at_the_cap_of_a_query_that_never_succeeds():
    sampling = arms.Balanced({"easy": 4, "rare": 3, "hard": 4})
    first, extra, waves, calls = run_waves(sampling, max_waves=5)
    drawn = arms.by_query(first + extra)
    assert len(drawn["easy"]) == 4  # its first pass holds its target
    # rare: 2 correct of its first 4 (s0, s3), the third at s6: a second wave reaches 3
    assert len(drawn["rare"]) == 8 and sum(s.correct for s in drawn["rare"]) == 3
    assert len(drawn["hard"]) == 5 * 4  # never solved: stopped by max_waves x K
    assert waves == 5
    # one call per wave, over every query still short of its target; numbering continues
    assert calls[1:] == [(["rare", "hard"], 4), (["hard"], 8), (["hard"], 12), (["hard"], 16)]
    assert [s.sample_id for s in drawn["hard"]] == [f"r0-hard-s{j}" for j in range(20)]
    assert {s.origin for s in extra} == {"extra"}


def test_a_budget_caps_the_waves_and_goes_to_the_queries_that_need_most():
    sampling = arms.Balanced({"easy": 4, "rare": 3, "hard": 4})
    # first pass: 12 samples x 10 tokens = 120; 60 more pay for one query's wave of 4 (40)
    first, extra, waves, calls = run_waves(sampling, budget=180)
    assert calls[1:] == [(["hard"], 4)]  # hard needs 4, rare 1: hard goes first, then stop
    assert sum(s.num_tokens for s in first + extra) <= 180
    # a budget that pays for everything changes nothing
    assert run_waves(sampling, budget=10_000)[3] == run_waves(sampling)[3]
    # a query is priced at its own tokens per sample: hard's long samples (4 x 30) do not fit
    # in what is left (260 - 200), rare's (4 x 10) do
    first, extra, waves, calls = run_waves(sampling, budget=260, tokens={"hard": 30})
    assert calls[1:] == [(["rare"], 4)]
    assert sum(s.num_tokens for s in first + extra) == 240


def test_distinct_sampling_draws_again_only_for_queries_with_one_class():
    sampling = arms.Distinct(partition())
    assert sampling.needs({"easy": [sample(Q, 0, PATH_A), sample(Q, 1, PATH_A_SWAPPED)],
                           "two": [sample(Q, 0, PATH_A), sample(Q, 1, PATH_B)],
                           "none": [sample(Q, 0, WRONG)]}) == {"easy": 1, "two": 0, "none": 0}
    first, extra, waves, calls = run_waves(sampling, max_waves=3)
    # easy always gives path A: sampled again up to the cap; rare gives path B only; hard none
    assert calls[1:] == [(["easy", "rare"], 4), (["easy", "rare"], 8)]


def test_filters_compose_with_extra_samples_and_refinements():
    critic = build_critic("countdown-oracle", None, {}, TASK)
    samples = [sample(Q, 0, PATH_A), sample(Q, 4, PATH_B, origin="extra"), sample(Q, 1, WRONG),
               make_sample(TASK, Q, "r0-q-s1-a0", Generation(PATH_A_SWAPPED, 5),
                           origin="refine", parent_id="r0-q-s1")]
    critiques = {c.sample_id: c for c in critic.critique(requests_for(samples, {"q": Q}))}
    rs = Arm.of(ArmConfig(name="rs")).filter.eligible(samples, critiques)
    assert [s.sample_id for s in rs] == ["r0-q-s0", "r0-q-s4"]  # refinements are not rs's
    crit = Arm.of(ArmConfig(name="critique")).filter.eligible(samples, critiques)
    assert [s.sample_id for s in crit] == ["r0-q-s0", "r0-q-s4", "r0-q-s1-a0"]


def test_row_cap_is_the_lowest_of_the_arm_cap_and_the_strategy_target():
    balanced = arms.Balanced({"a": 2, "b": 6})
    cap = arms.row_cap(ArmConfig(per_query_cap=4), balanced, 4)
    assert (cap("a"), cap("b")) == (2, 4)
    assert arms.row_cap(ArmConfig(), arms.Fixed(), 4)("a") is None
    # diverse selection without a cap of its own keeps at most K rows per query
    assert arms.row_cap(ArmConfig(selection="diverse"), arms.Fixed(), 4)("a") == 4
    assert arms.row_cap(ArmConfig(selection="diverse"), balanced, 4)("b") == 6


def test_the_arm_is_built_from_registered_parts_and_says_what_it_needs():
    assert {"fixed", "balanced", "distinct"} <= set(SAMPLINGS.names())
    assert {"rs", "critique"} <= set(FILTERS.names())
    cfg = ArmConfig(sampling="balanced", balanced=BalancedConfig("prop2diff", 4))
    arm = Arm.of(cfg)
    assert arm.sampling(POOL, partition()).targets == {"easy": 2, "rare": 3, "hard": 4}
    assert arm.adaptive and not arm.needs_critic
    assert Arm.of(ArmConfig(name="critique")).needs_critic
    assert not Arm.of(ArmConfig()).adaptive


def test_a_registered_filter_plugs_in_by_name(monkeypatch):
    monkeypatch.setattr(FILTERS, "registered", dict(FILTERS.registered))  # forgotten afterwards

    @register_filter("test-everything")
    class Everything:
        needs_critic = False

        def eligible(self, samples, critiques):
            return list(samples)

    samples = [sample(Q, 0, PATH_A), sample(Q, 1, WRONG)]
    arm = Arm.of(ArmConfig(name="test-everything"))
    assert arm.select(POOL, samples, {}, partition(), 4) == samples
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml", ["arm.name=test-everything"])
    assert checked_arm(cfg, "run").filter.eligible(samples, {}) == samples


def test_arm_settings_are_checked_with_the_key_named(tmp_path):
    path = REPO / "configs" / "countdown_rs.yaml"
    for override, key in (("arm.max_waves=0", "arm.max_waves"),
                          ("arm.balanced.target=0", "arm.balanced.target"),
                          ("arm.diverse.similarity=1.5", "arm.diverse.similarity")):
        with pytest.raises(ConfigError, match=key):
            load_config(path, [override])


@pytest.mark.parametrize("override, needle", [
    ("arm.name=best", "run: key arm.name must be one of critique, rs, top_m, got 'best'"),
    ("arm.name=2", "key arm.name must be one of critique, rs, top_m, got '2'"),
    ("arm.sampling=greedy", "key arm.sampling must be one of balanced, distinct, fixed, got 'greedy'"),
    ("rollout.backend=tgi", "key rollout.backend must be one of hf, vllm, got 'tgi'"),
    ("arm.name=critique", "run: arm.name critique needs critic.name or critic.path"),
])
def test_plugin_names_are_checked_before_ray_starts(tmp_path, override, needle):
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml", [override, f"run_root={tmp_path}"])
    with pytest.raises(ConfigError) as err:
        preflight(cfg, "run")
    assert needle in str(err.value)
