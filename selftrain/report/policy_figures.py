"""The report's figures of what the policy itself writes: its diversity on the test split (all
samples against passing ones), each solution format's share per round, and pass@k by round.

They read metrics.json only (the figures are computed once per round by the loop), so they cost
the report nothing beyond drawing.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from selftrain.metrics.keys import numeric_order
from selftrain.report.figures import (
    ArmStyle,
    ByArm,
    _arm_label,
    _arm_panels,
    _first_col_ylabel,
    _grid,
    _keys,
    _legend,
    _line,
    _round_axis,
    _suptitle,
    band_note,
    level_colors,
)
from selftrain.report.runs import series

POLICY_LABELS = {
    "eval_distinct_n": ("distinct-n, all samples", "unique / total n-grams"),
    "eval_self_bleu": ("self-BLEU, all (lower = more diverse)", "BLEU-4 (0–1)"),
    "eval_embed_div": ("embedding diversity, all", "1 − mean cosine"),
    "eval_distinct_n_passing": ("distinct-n, passing samples", "unique / total n-grams"),
    "eval_self_bleu_passing": ("self-BLEU, passing", "BLEU-4 (0–1)"),
    "eval_embed_div_passing": ("embedding diversity, passing", "1 − mean cosine"),
    "eval_classes": ("solution classes, all samples", "classes per test query"),
    "eval_classes_passing": ("solution classes, passing", "classes per test query"),
    "effective_div": ("effective diversity", "passing classes / n"),
    "passing_pair_div": ("passing pairs of distinct classes", "share of sample pairs"),
}


def fig_policy_diversity(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    keys = [k for k in POLICY_LABELS if any(series(rs, k) for rs in by_arm.values())]
    if not keys:
        return None
    fig = _arm_panels(by_arm, styles, [(k, *POLICY_LABELS[k]) for k in keys], 3)
    _suptitle(fig, f"{exp}: diversity of the policy's test samples per round, all against "
                   f"passing ({band_note(by_arm)})")
    return fig


def _per_arm_lines(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle], keys: list[str],
                   names: list[str], legend: str, ylabel: str, title: str,
                   share: bool) -> Figure:
    """A panel per arm, a line per key (named by `names`, coloured light to dark)."""
    colors = level_colors(names)
    fig, axes = _grid(len(by_arm), 3)
    for ax, (arm, rs) in zip(axes, by_arm.items()):
        for key, name in zip(keys, names):
            _line(ax, series(rs, key), colors[name], name)
        ax.set_title(_arm_label(arm, rs), color=styles[arm].color, fontweight="bold")
        ax.set_ylim(-0.02, 1.02)
        if share:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _round_axis(ax)
    _first_col_ylabel(axes, ylabel)
    _legend(fig, axes, legend)
    _suptitle(fig, f"{exp}: {title} ({band_note(by_arm)})")
    return fig


def fig_formats(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    prefix = "eval_format_share/"
    names = sorted(k[len(prefix):] for k in _keys(by_arm) if k.startswith(prefix))
    if not names:
        return None
    return _per_arm_lines(exp, by_arm, styles, [prefix + n for n in names], names, "format",
                          "share of test samples", "each solution format's share of the "
                          "policy's test samples per round", share=True)


def fig_pass_at_k(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    ks = sorted({k.split("@")[1] for k in _keys(by_arm) if k.startswith("pass@")},
                key=numeric_order)
    if len(ks) < 2:
        return None
    names = [f"pass@{k}" for k in ks]
    return _per_arm_lines(exp, by_arm, styles, names, names, "k", "test pass@k",
                          "pass@k by round", share=True)


POLICY_FIGURES = [
    ("policy_diversity", "Diversity of the policy's own samples", fig_policy_diversity,
     "Each panel is one figure of docs/metrics.md, \"Diversity of the policy\", per round and "
     "arm, over all n samples of each test query and over its passing ones: a policy can look "
     "less diverse over all samples yet more diverse over passing ones (effective diversity), "
     "because it writes more valid solutions."),
    ("formats", "Solution formats of the policy", fig_formats,
     "One panel per arm and one line per solution format: each format's share of the test "
     "samples, round by round; one line rising to 100% is format collapse."),
    ("pass_at_k", "pass@k by round", fig_pass_at_k,
     "One panel per arm and one line per k: pass@k on the test split, round by round; pass@1 "
     "rising while pass@k at large k stays or falls is the squeeze of a narrowing policy."),
]
"""(name, title, function, sentence) as `selftrain.report.figures.FIGURES`."""
