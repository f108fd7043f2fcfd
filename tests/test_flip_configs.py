"""The flip configs: every arm builds its task, the narrow pole's distinctiveness arm has a pass
threshold its right lines can reach, and a threshold the score can never reach is refused
before Ray starts, in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from selftrain.config import ConfigError, load_config
from selftrain.experiments.plan import arm_configs
from selftrain.loop.checks import preflight
from selftrain.tasks import graded, make_task

ROOT = Path(__file__).resolve().parents[1]
TASK = {"seed": 0, "levels": [2], "train_per_level": 4, "test_per_level": 4}


def test_every_flip_arm_builds_its_task_and_the_dpo_arms_are_there(tmp_path):
    cfg = load_config(ROOT / "configs" / "flip.yaml", [f"run_root={tmp_path}"])
    arms = arm_configs(cfg)
    assert {"narrow_dpo", "narrow_dpo_diverse", "broad_dpo", "broad_dpo_diverse"} <= set(arms)
    for label, arm in arms.items():
        task = make_task(arm.task.name, **arm.task.args)
        assert task.pass_threshold <= task.reachable_score(task.breadth, task.distinct_weight)
        assert (arm.train.objective == "dpo") == ("dpo" in label)
        assert (arm.arm.selection == "diverse") == label.endswith("diverse")
    countdown = arm_configs(load_config(ROOT / "configs" / "flip_countdown.yaml"))
    assert {label: a.train.objective for label, a in countdown.items()} == {
        "rs": "sft", "dpo": "dpo", "dpo_diverse": "dpo"}


def test_the_narrow_distinct_arm_passes_a_right_line_that_every_sample_repeats(tmp_path):
    """At breadth 1 the right line is unique: written by all 4 samples its words have rarity
    0, so it scores 1 - 0.5 = 0.5, which the arm's threshold (0.5) passes; main's 0.75 did not."""
    arm = arm_configs(load_config(ROOT / "configs" / "flip.yaml"))["narrow_distinct"]
    task = make_task("lexicon_lines", **{**arm.task.args, **TASK})
    query = task.queries("test")[0]
    right = task.reference_solutions(query, k=1)[0]
    marks = graded.scores(task, query, [right] * 4)
    assert marks == [0.5] * 4
    assert all(graded.passes(task, m) for m in marks)


@pytest.mark.parametrize("breadth,weight,threshold,ok", [
    (1, 0.5, 0.75, False), (1, 0.5, 0.5, True), (1, 0.2, 0.8, True), (1, 0.2, 0.81, False),
    (1, 0.0, 1.0, True), (2, 0.5, 1.0, True), (8, 0.5, 0.75, True)])
def test_a_threshold_right_lines_can_never_reach_together_is_refused(breadth, weight, threshold, ok):
    args = {**TASK, "breadth": breadth, "distinct_weight": weight, "pass_threshold": threshold}
    if ok:
        assert make_task("lexicon_lines", **args).pass_threshold == threshold
        return
    with pytest.raises(ValueError, match=r"key task\.args\.pass_threshold .* set pass_threshold <="):
        make_task("lexicon_lines", **args)


def test_preflight_refuses_main_s_narrow_distinct_threshold_in_one_line(tmp_path):
    cfg = load_config(ROOT / "configs" / "flip.yaml", [
        f"run_root={tmp_path}", "task.args.breadth=1", "task.args.distinct_weight=0.5",
        "task.args.pass_threshold=0.75"])
    with pytest.raises(ConfigError) as err:
        preflight(cfg, "flip.yaml")
    message = str(err.value)
    assert "\n" not in message and "task.args.pass_threshold 0.75 is above 0.5" in message
    assert message.startswith("flip.yaml: ")
