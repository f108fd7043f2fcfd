"""Start-up that costs more than the work: a sequential compare hands its actor groups from run
to run (and the runs give the same files as on fresh groups), `compare --resume` of a finished
experiment answers from the run folders without Ray, the benchmark's start-up figures, and the
notice before the embedded base model is rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMALL_TASK, assert_same_rounds, small_config

from selftrain.cluster.pool import GroupPool, group_key
from selftrain.config import TinyModelConfig, apply_overrides, load_config
from selftrain.models.rebuild_notice import estimate_seconds, rebuild_notice
from selftrain.models.shipped import SHIPPED

sys.path.insert(0, str(REPO / "scripts"))
from bench_startup import run_overheads, summary

PARQUETS = ("samples.parquet", "critiques.parquet", "train.parquet", "eval.parquet")


class Held:
    """A group as the pool sees it: shut down once, holding resources or not (`pg`)."""

    def __init__(self, holds: bool = True) -> None:
        self.pg, self.down = (object() if holds else None), 0

    def shutdown(self) -> None:
        self.down += 1


def test_the_pool_hands_over_only_under_the_same_key_and_frees_what_is_not_taken():
    pool = GroupPool()
    train, rollout, critic = Held(), Held(), Held(holds=False)
    pool.keep("k-train", train)
    pool.keep("k-rollout", rollout)
    pool.keep("k-critic", critic)
    # a run whose rollout was built otherwise: the old rollout group is shut down before it
    # starts its own; the critic (no resources held) waits for a later run
    found = pool.claim({"train": "k-train", "rollout": "k-rollout-2"})
    assert found == {"train": train} and rollout.down == 1 and critic.down == 0
    assert list(pool.idle) == ["k-critic"] and pool.taken == 1
    assert pool.claim({"train": "k-train", "critic": "k-critic"}) == {"critic": critic}
    again = Held()
    pool.keep("k-train", train)
    pool.keep("k-train", again)  # one group per key: the one it replaces is shut down
    assert train.down == 1 and pool.idle == {"k-train": again}
    pool.close()
    assert again.down == 1 and pool.idle == {}


def test_group_keys_follow_what_builds_a_group_not_the_runs_seed_or_sampling(tmp_path):
    from selftrain.arms.arm import Arm
    from selftrain.loop.run_groups import group_keys

    cfg = load_config(REPO / "configs" / "countdown_compare.yaml", [f"run_root={tmp_path}"])
    critique = apply_overrides(cfg, {"arm": {"name": "critique"}}, "test")
    keys = group_keys(critique, Arm.of(critique.arm), "/m")
    assert set(keys) == {"train", "rollout", "critic"}
    same = apply_overrides(critique, {"seed": 3, "rollout": {"temperature": 0.5}}, "test")
    assert group_keys(same, Arm.of(same.arm), "/m") == keys
    for change in ({"train": {"lr": 0.1}}, {"task": {"args": {"seed": 1}}},
                   {"rollout": {"resources": {"num_cpus": 2}}}):
        other = apply_overrides(critique, change, "test")
        changed = group_keys(other, Arm.of(other.arm), "/m")
        assert changed != keys, change
    assert group_keys(critique, Arm.of(critique.arm), "/other")["rollout"] != keys["rollout"]
    rs = apply_overrides(cfg, {"arm": {"name": "rs"}}, "test")
    assert set(group_keys(rs, Arm.of(rs.arm), "/m")) == {"train", "rollout"}
    assert group_key("x", a=1, b=[1, 2]) == group_key("x", b=[1, 2], a=1)


def test_run_overhead_is_wall_time_less_every_recorded_stage():
    manifest = lambda *secs: {"rounds": {str(k): {"generate": {"seconds": a},  # noqa: E731
                                                  "metrics": {"seconds": b}}
                                         for k, (a, b) in enumerate(secs)}}
    minutes = {"arm rs seed 0": 30.0, "arm rs seed 1": 10.0, "arm critique seed 0": 12.5,
               "other": 1.0}
    runs = run_overheads(minutes, {"rs seed 0": manifest((2.0, 1.0), (3.0, 1.0)),
                                   "rs seed 1": manifest((4.0, 1.0)),
                                   "critique seed 0": manifest((5.0, 0.5), (2.0, 1.0))})
    assert runs["rs seed 0"] == {"wall_s": 30.0, "stages_s": 7.0, "overhead_s": 23.0}
    assert runs["rs seed 1"]["overhead_s"] == 5.0 and runs["critique seed 0"]["overhead_s"] == 4.0
    got = summary(runs, {"seconds": 1.25})
    assert got == {"run_overhead_s": 5.0, "finished_resume_s": 1.25}  # median of 23, 5, 4


def test_the_rebuild_notice_names_the_changed_task_args_and_scales_the_shipped_build(tmp_path):
    shipped = json.loads(next(SHIPPED.glob("countdown-*/selftrain_base.json")).read_text())
    task = dict(shipped["task"], train_per_level=8, test_per_level=4)
    cfg = TinyModelConfig(**{**shipped["model"], "sft_steps": 300})
    notice = rebuild_notice(task, cfg, tmp_path, tmp_path / "countdown-x")
    assert "task.args.train_per_level 60 → 8" in notice
    assert "task.args.test_per_level 25 → 4" in notice and "model.tiny.sft_steps 600 → 300" in notice
    half = shipped["seconds"] * 300 / 600  # same widths and batch: the steps' share of the build
    assert estimate_seconds(shipped, cfg) == pytest.approx(half)
    assert f"roughly {half:.0f} s" in notice or f"roughly {half / 60:.0f} min" in notice
    assert str(tmp_path / "countdown-x") in notice


def test_a_build_of_the_embedded_model_says_so_before_it_starts(tmp_path, capsys):
    from selftrain.models.tiny_model import ensure_tiny_model
    from selftrain.tasks import make_task

    task = make_task("countdown", **dict(SMALL_TASK, train_per_level=2))
    cfg = TinyModelConfig(sft_steps=2, sft_levels=[2], hidden_size=32, num_layers=1,
                          num_heads=1, intermediate_size=64)
    path = ensure_tiny_model(task, cfg, tmp_path)
    out = capsys.readouterr().out
    assert "building the embedded base model for task countdown" in out
    assert "task.args.train_per_level 60 → 2" in out and "model.tiny.hidden_size 128 → 32" in out
    assert (path / "model.safetensors").is_file()
    ensure_tiny_model(task, cfg, tmp_path)  # cached now: nothing to say
    assert "building" not in capsys.readouterr().out


def _pids(log: Path, group: str) -> str:
    found = re.search(rf"{group} (?:started|taken over from the previous run) \(pids ([\d, ]+)\)",
                      log.read_text())
    assert found, log.read_text()[-2000:]
    return found.group(1)


@pytest.fixture(scope="module")
def handed_over(tmp_path_factory, ray_cluster, model_cache):
    """A sequential compare of three runs: critique (fresh groups), rs (takes over the rollout
    and training groups), critique again under another label (takes over all three)."""
    from selftrain.experiments.compare import run_compare
    from selftrain.metrics import embed

    embed._cache.clear()  # this process may have embedded these texts in an earlier test
    tmp = tmp_path_factory.mktemp("handover")
    arms = "arms={a: {arm.name: critique}, rs: {arm.name: rs}, b: {arm.name: critique}}"
    cfg = small_config(tmp, model_cache, arms, "tracking.enabled=false", "refine.attempts=2",
                       "experiment=handover", "metrics.prefetch_embeddings=true",
                       config="countdown_compare.yaml")
    run_compare(cfg)
    return cfg, tmp / "runs" / "handover"


def test_runs_on_handed_over_groups_write_what_fresh_groups_write(handed_over, model_cache):
    from selftrain.loop.driver import run_arm

    cfg, exp = handed_over
    a, rs, b = (exp / label / "seed0" for label in ("a", "rs", "b"))
    for name, group in (("rollout", "rollout"), ("critic", "critic")):
        assert _pids(b / "logs" / "selftrain.log", group) == _pids(a / "logs" / "selftrain.log",
                                                                   group), name
    assert "train taken over" in (rs / "logs" / "selftrain.log").read_text()
    assert "rollout taken over" in (rs / "logs" / "selftrain.log").read_text()
    # b: the same config as a, on the groups a and rs left behind: the same files as a's
    assert_same_rounds(b, a, [0, 1], PARQUETS)
    sha = lambda p: hashlib.sha256((p / "round_1/checkpoint/model.safetensors").read_bytes())  # noqa: E731
    assert sha(b).hexdigest() == sha(a).hexdigest()
    # rs after a critique run, against rs alone on fresh groups
    fresh = apply_overrides(cfg, {"experiment": "fresh", "arms": {}, "arm": {"name": "rs"}},
                            "test")
    run_arm(fresh, "rs")
    alone = exp.parent / "fresh" / "rs" / "seed0"
    assert "rollout started" in (alone / "logs" / "selftrain.log").read_text()
    assert_same_rounds(rs, alone, [0, 1], ("samples.parquet", "train.parquet", "eval.parquet"))
    assert sha(rs).hexdigest() == sha(alone).hexdigest()


def test_compare_resume_of_a_finished_experiment_answers_without_ray(handed_over):
    _, exp = handed_over
    report = exp / "report" / "report.md"
    before = (report.stat().st_mtime_ns, (exp / "comparison.json").read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "selftrain", "compare", "--resume", str(exp)],
                          env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert "all 3 runs are recorded; nothing to run" in done.stdout
    assert "comparison and report are up to date" in done.stdout
    assert not (exp.parent / ".ray").exists()  # no local cluster was started
    assert (report.stat().st_mtime_ns, (exp / "comparison.json").read_bytes()) == before
    assert seconds < 60, seconds  # ~2 s on a quiet 2-core machine; the bound allows contention


def test_compare_pairs_added_on_resume_compare_two_arms_from_the_records(handed_over):
    """compare.pairs shapes no recorded file: a finished experiment's resume takes it and
    writes the pair's cells (b and a are the same config: every cell says so)."""
    _, exp = handed_over
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "selftrain", "compare", "--resume", str(exp),
                           "compare.pairs=[[b, a]]", "--no-report"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = json.loads((exp / "comparison.json").read_text())["cells"]
    pair = [c for c in cells if (c["arm"], c["reference"]) == ("b", "a")]
    assert pair and {c["round"] for c in pair} == {0, 1}
    assert all(c["diff"] in (0, None) for c in pair)
    assert {c["arm"] for c in cells if c["reference"] == "rs"} == {"a", "b"}  # the baseline's stay
    # the policy's diversity figures are cells too, recomputed from eval.parquet (and checked
    # against metrics.json) with the run's tokenizer and solution-key judge
    assert {"eval_distinct_n", "eval_classes", "effective_div"} <= {c["key"] for c in cells}
    # metrics.prefetch_embeddings: round 0's test samples were embedded during evaluate
    manifest = json.loads((exp / "a" / "seed0" / "manifest.json").read_text())
    assert manifest["rounds"]["0"]["metrics"]["embed_prefetch_s"] > 0
    assert not (exp.parent / ".ray").exists()


def test_a_changed_record_rewrites_the_comparison_on_resume(tmp_path):
    from selftrain.experiments.finished import stamp_summary, summary_current
    from selftrain.experiments.plan import plan

    cfg = load_config(REPO / "configs" / "countdown_compare.yaml", [f"run_root={tmp_path}"])
    runs = plan(cfg)
    exp = tmp_path / cfg.experiment
    for run in runs:
        run.folder.mkdir(parents=True)
        (run.folder / "manifest.json").write_text(json.dumps({"rounds": {}}))
    (exp / "comparison.json").write_text("{}")
    assert not summary_current(runs, exp, report=False)  # never stamped
    stamp_summary(runs, exp, report=False)
    assert summary_current(runs, exp, report=False)
    assert not summary_current(runs, exp, report=True)  # the report was not written
    (runs[1].folder / "manifest.json").write_text(json.dumps({"rounds": {"0": {}}}))
    assert not summary_current(runs, exp, report=False)
