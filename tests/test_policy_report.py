"""The report's figures of the policy's own samples (diversity all vs passing, format shares,
pass@k by round): drawn from metrics.json, each line the mean over seeds of its key."""

from __future__ import annotations

import numpy as np
from test_report import assert_images, fake_metrics, make_run

from selftrain.report import write_report
from selftrain.report.figures import arm_styles
from selftrain.report.policy_figures import fig_formats, fig_pass_at_k
from selftrain.report.runs import find_runs


def policy_metrics(arm: str, seed: int, k: int) -> dict:
    """rs collapses onto the step format round by round; critique keeps both."""
    steps = min(1.0, 0.5 + (0.2 if arm == "rs" else 0.05) * k + 0.02 * seed)
    return {**fake_metrics(arm, seed, k),
            "eval_distinct_n": 0.5 - 0.05 * k, "eval_distinct_n_passing": 0.4 - 0.03 * k,
            "eval_self_bleu": 0.3, "eval_self_bleu_passing": 0.5,
            "eval_embed_div": 0.2, "eval_embed_div_passing": None,
            "eval_classes": 3.0 - 0.3 * k, "eval_classes_passing": 1.0 + 0.1 * k,
            "effective_div": 0.1 + 0.02 * k, "passing_pair_div": 0.05,
            "eval_format_share/steps": steps, "eval_format_share/expression": 1 - steps,
            "pass@2": 0.5, "pass@8": 0.7 - 0.05 * k}


def test_policy_figures_are_drawn_and_hold_the_seed_means(tmp_path):
    root = tmp_path / "runs"
    for arm in ("rs", "critique"):
        for seed in (0, 1):
            make_run(root, "fc", arm, seed, {k: policy_metrics(arm, seed, k) for k in range(3)})
    report_md = write_report([root], tmp_path / "out")
    pngs = {p.split("-", 1)[1] for p in assert_images(report_md)}
    assert {"policy_diversity.png", "formats.png", "pass_at_k.png"} <= pngs
    assert "Solution formats of the policy" in report_md.read_text()

    by_arm: dict = {}
    for run in find_runs([root], []):
        by_arm.setdefault(run.arm, []).append(run)
    styles = arm_styles(list(by_arm))
    fig = fig_formats("fc", by_arm, styles)
    rs_panel = next(ax for ax in fig.axes if ax.get_title().startswith("rs"))
    steps_line = next(line for line in rs_panel.lines if line.get_label() == "steps")
    want = [np.mean([policy_metrics("rs", s, k)["eval_format_share/steps"] for s in (0, 1)])
            for k in range(3)]
    assert np.allclose(steps_line.get_ydata(), want)
    fig = fig_pass_at_k("fc", by_arm, styles)
    labels = {line.get_label() for line in fig.axes[0].lines}
    assert labels == {"pass@1", "pass@2", "pass@8"}
