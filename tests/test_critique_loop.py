"""The critique arm on a real Ray cluster: critic workers, both refine modes, the process filter,
and critics plugged in from outside the package (module:Class path and entry point)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import small_config

from critics import CriticLoadError, build_critic, known_critics
from selftrain.loop.driver import run_arm


def critique_config(tmp_path, model_cache, *extra):
    return small_config(tmp_path, model_cache, "arm.name=critique", "critic.name=countdown-oracle",
                        "refine.attempts=2", *extra)


@pytest.fixture(scope="module")
def critique_run(tmp_path_factory, ray_cluster, model_cache):
    tmp = tmp_path_factory.mktemp("critique")
    cfg = critique_config(tmp, model_cache, "refine.mode=resume")
    history = run_arm(cfg, "critique")
    return cfg, history, tmp / "runs" / cfg.experiment / "critique" / "seed0"


def test_every_first_pass_sample_and_refinement_is_critiqued(critique_run):
    cfg, history, run = critique_run
    for k in (0, 1):
        rd = run / f"round_{k}"
        samples = pd.read_parquet(rd / "samples.parquet")
        critiques = pd.read_parquet(rd / "critiques.parquet")
        assert set(critiques["sample_id"]) == set(samples["sample_id"])
        assert (critiques["step_ok"].map(len) == samples.set_index("sample_id").loc[
            critiques["sample_id"], "steps"].map(len).to_numpy()).all()
        assert history[k]["critic_calls"] == len(critiques)
        # first_error is the index of the first step the oracle rejects
        for row in critiques.itertuples():
            flags = list(row.step_ok)
            assert row.first_error == (flags.index(False) if False in flags else -1)


def test_refinements_resume_from_the_first_error(critique_run):
    _, _, run = critique_run
    samples = pd.read_parquet(run / "round_0" / "samples.parquet").set_index("sample_id")
    critiques = pd.read_parquet(run / "round_0" / "critiques.parquet").set_index("sample_id")
    refine = samples[samples["origin"] == "refine"]
    assert len(refine) > 0
    for sid, row in refine.iterrows():
        parent = samples.loc[row["parent_id"]]
        assert parent["origin"] == "sample" and not parent["correct"]
        assert row["prompt"] == parent["prompt"]
        # the first attempt keeps the parent's steps before its first error, verbatim
        if sid.endswith("-a0"):
            cut = critiques.loc[row["parent_id"], "first_error"]
            cut = len(parent["steps"]) if cut < 0 else cut
            assert list(row["steps"])[:cut] == list(parent["steps"])[:cut]


def test_training_set_is_verified_samples_plus_verified_refinements(critique_run):
    _, history, run = critique_run
    for k in (0, 1):
        rd = run / f"round_{k}"
        samples = pd.read_parquet(rd / "samples.parquet").set_index("sample_id")
        critiques = pd.read_parquet(rd / "critiques.parquet").set_index("sample_id")
        train = pd.read_parquet(rd / "train.parquet")
        for sid in train["sample_id"]:
            assert samples.loc[sid, "correct"] and critiques.loc[sid, "first_error"] == -1
        metrics = json.loads((rd / "metrics.json").read_text())
        share = (train["origin"] == "refine").mean() if len(train) else 0.0
        assert metrics["refined_share"] == pytest.approx(share)
        # every verified refinement is trained on, unless it duplicates a kept completion
        refine = samples[samples["origin"] == "refine"]
        verified = refine[refine["correct"] & (critiques.loc[refine.index, "first_error"] == -1)]
        kept = set(train["sample_id"])
        for sid, row in verified.iterrows():
            same = train[(train["query_id"] == row["query_id"]) &
                         (train["completion"] == row["completion"])]
            assert sid in kept or len(same) == 1


def test_rewrite_mode_trains_on_the_query_prompt(tmp_path, ray_cluster, model_cache):
    cfg = critique_config(tmp_path, model_cache, "refine.mode=rewrite", "rounds=0",
                          "refine.attempts=1")
    run_arm(cfg, "critique")
    samples = pd.read_parquet(tmp_path / "runs" / cfg.experiment / "critique" / "seed0" /
                              "round_0" / "samples.parquet")
    refine = samples[samples["origin"] == "refine"]
    assert len(refine) == (~samples[samples["origin"] == "sample"]["correct"]).sum()
    parents = samples.set_index("sample_id").loc[refine["parent_id"]]
    assert (refine["prompt"].to_numpy() == parents["prompt"].to_numpy()).all()
    assert not refine["completion"].str.contains("# critique").any()


def test_process_filter_drops_correct_samples_the_critic_rejects(tmp_path, ray_cluster,
                                                                 model_cache, plugin_dir):
    """A critic from a file outside the package (critic.path=module:Class) that flags every
    sample: outcome-correct samples exist, yet none may enter the training set."""
    cfg = critique_config(tmp_path, model_cache, "critic.name=null",
                          "critic.path=my_critics:RejectEverything", "rounds=0",
                          "refine.attempts=1")
    history = run_arm(cfg, "critique")
    rd = tmp_path / "runs" / cfg.experiment / "critique" / "seed0" / "round_0"
    samples = pd.read_parquet(rd / "samples.parquet")
    critiques = pd.read_parquet(rd / "critiques.parquet")
    assert samples["correct"].any()
    assert (critiques["critic"] == "reject-everything").all()
    assert len(pd.read_parquet(rd / "train.parquet")) == 0
    assert history[0]["train_size"] == 0


def test_entry_point_critic_runs_in_the_loop(tmp_path, ray_cluster, model_cache, plugin_dir):
    assert "always-ok" in known_critics()
    cfg = critique_config(tmp_path, model_cache, "critic.name=always-ok", "rounds=0",
                          "refine.attempts=1")
    run_arm(cfg, "critique")
    rd = tmp_path / "runs" / cfg.experiment / "critique" / "seed0" / "round_0"
    assert (pd.read_parquet(rd / "critiques.parquet")["critic"] == "always-ok").all()


def test_unknown_and_broken_critics_fail_with_the_list_of_known_critics(plugin_dir):
    with pytest.raises(CriticLoadError, match="known critics: .*countdown-oracle"):
        build_critic("no-such-critic", None, {}, None)
    with pytest.raises(CriticLoadError, match="importing no_such_module failed"):
        build_critic(None, "no_such_module:Critic", {}, None)
    with pytest.raises(CriticLoadError, match="does not fit the Critic protocol"):
        build_critic(None, "collections:Counter", {}, None)


def test_compare_budget_matches_and_resume_starts_arms_never_reached(tmp_path, ray_cluster,
                                                                     model_cache):
    """`compare --resume` on an experiment whose arms never started runs them (a compare
    killed before its later arms must be resumable); the budget-matched rs arm draws the
    critique arm's tokens; the report is written."""
    from selftrain.experiments.compare import run_compare

    cfg = small_config(tmp_path, model_cache, "rounds=0", "tracking.enabled=false",
                       "refine.attempts=2", config="countdown_compare.yaml")
    results = run_compare(cfg, resume=True)
    assert set(results) == {"critique", "rs", "rs_budget"}
    round0 = {arm: by_seed[0][0] for arm, by_seed in results.items()}  # seed 0, round 0
    spent, matched = round0["critique"]["gen_tokens"], round0["rs_budget"]["gen_tokens"]
    assert round0["rs"]["gen_tokens"] < spent
    assert abs(matched - spent) <= 0.1 * spent
    assert round0["rs_budget"]["samples_per_query"] > round0["rs"]["samples_per_query"]
    exp = tmp_path / "runs" / cfg.experiment
    assert (exp / "report" / "report.md").is_file()
    comparison = json.loads((exp / "comparison.json").read_text())
    pairs = {(c["arm"], c["reference"]) for c in comparison["cells"]}
    assert pairs == {("critique", "rs"), ("rs_budget", "rs"), ("critique", "rs_budget")}
