"""The report's figures: one function per figure, each drawing every arm of one experiment.

Each arm keeps one colour and marker across every figure. Several seeds of an arm are drawn as
the mean over seeds with a shaded band from the lowest to the highest seed (min–max, labelled in
each title; a title says "one seed" where there is no band): a band shows spread, the bootstrap
intervals of arm differences are in the comparison table (comparison.json) below the figures.
Rates (figures in [0, 1]) are drawn on the whole [0, 1] axis, so that a difference of 0.01, one
seed's noise, does not fill the panel like a trend.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, MaxNLocator, PercentFormatter

from selftrain.metrics.keys import PATHS_QUERIES, hardest_key, levels, over_queries
from selftrain.report.runs import CUM_TOKENS, RunMetrics, Stat, metric_keys, series

ByArm = dict[str, list[RunMetrics]]
"""An experiment's runs: arm -> its run folders (one per seed)."""

DIVERSITY_LABELS = {
    "distinct_paths": ("distinct solution paths", "distinct solutions per query (count)"),
    "distinct_n": ("distinct-n (n = 1..4)", "unique / total n-grams (ratio)"),
    "ead": ("expectation-adjusted distinct-n", "EAD (ratio)"),
    "self_bleu": ("self-BLEU-4 (lower = more diverse)", "BLEU-4 against same-query others (0–1)"),
    "embed_div": ("embedding diversity", "1 − mean cosine similarity"),
    "answer_entropy": ("final-answer entropy", "entropy of first-pass answers (nats)"),
}
RATE_KEYS = frozenset({
    "pass@1", "coverage", "distinct_n", "self_bleu", "embed_div", "refined_share",
    "eval_distinct_n", "eval_self_bleu", "eval_embed_div", "eval_distinct_n_passing",
    "eval_self_bleu_passing", "eval_embed_div_passing", "effective_div", "passing_pair_div"})
"""Figures whose values lie in [0, 1] (docs/metrics.md), drawn on a [0, 1] y axis (and the
`@L` figures acc@L and coverage@L, whose panels set it themselves)."""
PANEL_W, PANEL_H = 4.2, 3.3


@dataclass(frozen=True)
class ArmStyle:
    """How one arm is drawn: the same in every figure and every experiment of the report.

    The marker differs too, so arms with identical numbers (overlapping lines) both stay visible.
    """

    color: Any
    marker: str


def arm_styles(arms: list[str]) -> dict[str, ArmStyle]:
    cmap = matplotlib.colormaps["tab10" if len(set(arms)) <= 10 else "tab20"]
    markers = "osD^vP*Xph"
    return {arm: ArmStyle(cmap(i % cmap.N), markers[i % len(markers)])
            for i, arm in enumerate(sorted(set(arms)))}


def level_colors(names: list[str]) -> dict[str, Any]:
    """Easy levels light, hard levels dark, so the tail reads the same in every figure."""
    cmap = matplotlib.colormaps["viridis"]
    pos = np.linspace(0.85, 0.05, len(names)) if len(names) > 1 else [0.05]
    return {name: cmap(p) for name, p in zip(names, pos)}


def _grid(n: int, max_cols: int, sharey: bool = True) -> tuple[Figure, list[Axes]]:
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig = Figure(figsize=(max(PANEL_W * cols, 6.0), PANEL_H * rows + 0.9), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _round_axis(ax: Axes) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 1:  # a single round: keep the tick on it, not at fractions of a round
        ax.set_xlim((lo + hi) / 2 - 0.5, (lo + hi) / 2 + 0.5)
    if not ax.lines and not ax.collections:
        ax.text(0.5, 0.5, "no numbers in metrics.json", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    ax.grid(alpha=0.3)


def _first_col_ylabel(axes: list[Axes], label: str) -> None:
    """Panels share their y axis; label it once per row, at the left."""
    for ax in axes:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(label)


def _legend(fig: Figure, axes: list[Axes], title: str) -> None:
    """One figure legend from every panel's labelled artists (a panel may lack an arm)."""
    found: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    items = list(found.items())
    if items:
        fig.legend([h for _, h in items], [lab for lab, _ in items], loc="outside lower center",
                   title=title, ncols=_legend_cols(fig, [lab for lab, _ in items]))


def _legend_cols(fig: Figure, labels: list[str]) -> int:
    """As many legend columns as fit the figure's width (constrained layout never widens it)."""
    col_inches = 0.085 * max(map(len, labels)) + 0.9  # ~10pt text plus the handle and padding
    return max(1, min(len(labels), int(fig.get_figwidth() // col_inches)))


def _suptitle(fig: Figure, text: str) -> None:
    """Wrapped to the figure's width: a one-panel figure must not clip its title."""
    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 10)))


def _line(ax: Axes, s: dict[int, Stat], color: Any, label: str, marker: str = "o",
          x: dict[int, Stat] | None = None) -> None:
    """Mean over seeds with a min–max band; markers so that a single round still shows."""
    ks = sorted(s if x is None else set(s) & set(x))
    if not ks:
        return
    xs = ks if x is None else [x[k].mean for k in ks]
    ax.plot(xs, [s[k].mean for k in ks], "-", marker=marker, color=color, label=label, lw=1.8,
            ms=5)
    if any(s[k].n > 1 for k in ks):
        ax.fill_between(xs, [s[k].lo for k in ks], [s[k].hi for k in ks], color=color, alpha=0.18,
                        lw=0)


def rate_axis(ax: Axes) -> None:
    """The y axis of a rate: all of [0, 1] (widened only if a value falls outside it)."""
    lo, hi = 0.0, 1.0
    if ax.lines or ax.collections:
        lo, hi = min(lo, ax.dataLim.y0), max(hi, ax.dataLim.y1)
    pad = 0.02 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


def band_note(by_arm: ByArm) -> str:
    """What a figure's shading is: "band: min–max over seeds", or "one seed" (no band)."""
    single = [arm for arm, rs in by_arm.items() if len(rs) == 1]
    if len(single) == len(by_arm):
        return "one seed"
    note = "band: min–max over seeds"
    return note + f"; one seed: {', '.join(single)}" if single else note


def _paths_title(by_arm: ByArm, title: str) -> str:
    """`distinct_paths`'s panel title with the number of queries it is a mean over."""
    counts = over_queries(r.metrics[k].get(PATHS_QUERIES) for rs in by_arm.values()
                          for r in rs for k in r.metrics)
    return f"{title}\n(mean over {counts.strip(' ()')} queries)" if counts else title


def _keys(by_arm: ByArm) -> set[str]:
    return metric_keys([r for rs in by_arm.values() for r in rs])


def _arm_label(arm: str, runs: list[RunMetrics]) -> str:
    return f"{arm} ({len(runs)} seeds)" if len(runs) > 1 else arm


def _arm_panels(by_arm: ByArm, styles: dict[str, ArmStyle], panels: list[tuple[str, str, str]],
                max_cols: int, dress: Callable[[Axes, str], None] | None = None) -> Figure:
    """One panel per (key, title, ylabel): a line per arm over rounds, one legend of arms.

    dress(ax, key) adds a panel's own touches after its lines are drawn.
    """
    fig, axes = _grid(len(panels), max_cols, sharey=False)
    for ax, (key, title, ylabel) in zip(axes, panels):
        for arm, rs in by_arm.items():
            _line(ax, series(rs, key), styles[arm].color, _arm_label(arm, rs), styles[arm].marker)
        if key in RATE_KEYS:
            rate_axis(ax)
        if dress is not None:
            dress(ax, key)
        ax.set_title(_paths_title(by_arm, title) if key == "distinct_paths" else title)
        ax.set_ylabel(ylabel)
        _round_axis(ax)
    _legend(fig, axes, "arm")
    return fig


def _level_grid(by_arm: ByArm, prefix: str) -> tuple[list[str], dict[str, Any], Figure,
                                                      list[Axes]] | None:
    """The levels of the `prefix@L` keys, their colours and a panel per arm (None: no level)."""
    lv = levels(_keys(by_arm), prefix)
    if not lv:
        return None
    return lv, level_colors(lv), *_grid(len(by_arm), 3)


def fig_train_share(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    if (grid := _level_grid(by_arm, "train_share")) is None:
        return None
    lv, lcol, fig, axes = grid
    for ax, (arm, runs) in zip(axes, by_arm.items()):
        shares = {L: series(runs, f"train_share@{L}") for L in lv}
        pool = {L: series(runs, f"pool_share@{L}") for L in lv}
        ks = sorted({k for s in shares.values() for k in s})
        first_pool = min((k for s in pool.values() for k in s), default=None)
        bars: list[tuple[Any, dict[str, float]]] = []  # (x, level -> mean share)
        if first_pool is not None:
            bars.append(("pool", {L: pool[L][first_pool].mean if first_pool in pool[L] else 0.0
                                  for L in lv}))
        bars += [(k, {L: shares[L][k].mean if k in shares[L] else 0.0 for L in lv}) for k in ks]
        xs = np.arange(len(bars)) + (0 if first_pool is None else -1)
        bottom = np.zeros(len(bars))
        for L in lv:
            h = np.array([b[1][L] for b in bars])
            cont = ax.bar(xs, h, bottom=bottom, width=0.72, color=lcol[L], edgecolor="white",
                          lw=0.5)
            if first_pool is not None:
                cont.patches[0].set_hatch("//")
            bottom += h
        if len(bars) <= 12:  # the hardest level's share, printed where the eye compares it
            for x, (_, b) in zip(xs, bars):
                ax.text(x, max(bottom.max(), 1.0) + 0.02, f"{b[lv[-1]]:.0%}", ha="center",
                        va="bottom", fontsize=7.5, color=lcol[lv[-1]])
        ax.set_xticks(xs, [str(b[0]) for b in bars])
        ax.set_xlabel("round (first bar: query pool)")
        ax.set_ylim(0, 1.13)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(_arm_label(arm, runs), color=styles[arm].color, fontweight="bold")
    _first_col_ylabel(axes, "share of accepted training rows")
    fig.legend([Patch(color=lcol[L]) for L in lv], [f"level {L}" for L in lv],
               loc="outside lower center", title="difficulty (easy → hard)",
               ncols=_legend_cols(fig, [f"level {L}" for L in lv]))
    _suptitle(fig, f"{exp}: training-set mix by difficulty (on top: share of hardest "
                   f"level {lv[-1]})")
    return fig


def fig_tail(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    keys = _keys(by_arm)
    cov = hardest_key(keys, "coverage")
    H = cov.split("@")[1] if cov else (levels(keys, "pool_share") or ["H"])[-1]
    panels = [("tail_ratio", f"tail ratio (hardest level {H})", "train share ÷ pool share of level "
               f"{H}")]
    if cov:
        panels.append((cov, f"coverage of hardest level {H}",
                       f"share of level-{H} pool queries\nwith ≥ 1 accepted row"))
    if not any(series(rs, key) for key, _, _ in panels for rs in by_arm.values()):
        return None

    def dress(ax: Axes, key: str) -> None:
        if key == "tail_ratio":
            if ax.lines:  # a reference line on an empty panel would read as data
                ax.axhline(1.0, ls="--", color="0.3", lw=1.2, label="1 = no narrowing")
        else:
            ax.set_ylim(-0.02, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))

    fig = _arm_panels(by_arm, styles, panels, 2, dress)
    _suptitle(fig, f"{exp}: tail narrowing per round ({band_note(by_arm)})")
    return fig


def fig_acc(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    if (grid := _level_grid(by_arm, "acc")) is None:
        return None
    lv, lcol, fig, axes = grid
    for ax, (arm, rs) in zip(axes, by_arm.items()):
        for L in lv:
            _line(ax, series(rs, f"acc@{L}"), lcol[L], f"level {L}")
        ax.set_title(_arm_label(arm, rs), color=styles[arm].color, fontweight="bold")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _round_axis(ax)
    _first_col_ylabel(axes, "test pass@1 within level")
    _legend(fig, axes, "difficulty (easy → hard)")
    _suptitle(fig, f"{exp}: test accuracy per difficulty level ({band_note(by_arm)})")
    return fig


def fig_diversity(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    keys = [k for k in DIVERSITY_LABELS if any(series(rs, k) for rs in by_arm.values())]
    if not keys:
        return None
    fig = _arm_panels(by_arm, styles, [(k, *DIVERSITY_LABELS[k]) for k in keys], 3)
    _suptitle(fig, f"{exp}: diversity of accepted solutions per round ({band_note(by_arm)})")
    return fig


def fig_budget(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle]) -> Figure | None:
    curves = {arm: (series(rs, "pass@1"), series(rs, CUM_TOKENS)) for arm, rs in by_arm.items()}
    if not any(set(p) & set(t) for p, t in curves.values()):
        return None
    fig = Figure(figsize=(7.8, 4.6), layout="constrained")
    ax = fig.subplots()
    for arm, (p, t) in curves.items():
        _line(ax, p, styles[arm].color, _arm_label(arm, by_arm[arm]), styles[arm].marker, x=t)
        ks = sorted(set(p) & set(t))
        for k in ks if len(ks) <= 12 else [ks[0], ks[-1]]:  # long runs: first and last only
            ax.annotate(f"r{k}", (t[k].mean, p[k].mean), textcoords="offset points",
                        xytext=(4, -11), fontsize=8, color=styles[arm].color)
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel("cumulative policy tokens generated (samples + refinements)")
    ax.set_ylabel("test pass@1")
    rate_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(title="arm (rK = after round K)", loc="best")
    _suptitle(fig, f"{exp}: test pass@1 against generation budget ({band_note(by_arm)})")
    return fig


def _rebin(hists: list[tuple[list[float], list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum histograms whose bin edges may differ by seed onto one set of edges.

    Counts are spread uniformly within each bin (interpolating the cumulative count), which is
    exact when every seed used the same edges, the usual case.
    """
    edge_sets = [np.asarray(e, dtype=float) for e, _ in hists]
    same = all(len(e) == len(edge_sets[0]) and np.allclose(e, edge_sets[0]) for e in edge_sets)
    common = edge_sets[0] if same else np.linspace(min(e[0] for e in edge_sets),
                                                   max(e[-1] for e in edge_sets), 21)
    total = np.zeros(len(common) - 1)
    for edges, (_, counts) in zip(edge_sets, hists):
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(counts, dtype=float))])
        total += np.diff(np.interp(common, edges, cum))
    return common, total


def _share(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum() if counts.sum() > 0 else counts


def fig_histograms(exp: str, by_arm: ByArm,
                   styles: dict[str, ArmStyle]) -> tuple[Figure | None, str]:
    """Length (last round) and correct-per-query (first vs last round), one row per arm."""
    if not any(r.histograms for rs in by_arm.values() for r in rs):
        return None, ""
    fig = Figure(figsize=(2 * PANEL_W + 1.2, PANEL_H * len(by_arm) + 0.6), layout="constrained")
    grid = fig.subplots(len(by_arm), 2, squeeze=False)
    rounds_shown = []
    for (ax_len, ax_cpq), (arm, rs) in zip(grid, by_arm.items()):
        hk = sorted({k for r in rs for k in r.histograms})
        if not hk:
            for ax in (ax_len, ax_cpq):
                ax.text(0.5, 0.5, f"{arm}: no histograms.json", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
                ax.set_axis_off()
            continue
        first, last = hk[0], hk[-1]
        rounds_shown.append(f"{arm}: {first}→{last}")
        _length_panel(ax_len, _arm_label(arm, rs), rs, last, styles[arm].color)
        _success_panel(ax_cpq, _arm_label(arm, rs), rs, first, last, styles[arm].color)
    seeds = "one seed" if all(len(rs) == 1 for rs in by_arm.values()) else "summed over seeds"
    _suptitle(fig, f"{exp}: length and per-query success histograms ({seeds})")
    return fig, "; ".join(rounds_shown)


def _length_panel(ax: Axes, name: str, rs: list[RunMetrics], last: int, color: Any) -> None:
    """Accepted-solution lengths of round `last` against the references, summed over seeds."""
    lengths = [r.histograms[last]["length"] for r in rs
               if last in r.histograms and "edges" in r.histograms[last].get("length", {})]
    for key, label, look in [("completions", "accepted", {"fill": True, "alpha": 0.55,
                                                          "color": color}),
                             ("references", "reference", {"color": "black", "lw": 1.5})]:
        hs = [(h["edges"], h[key]) for h in lengths if key in h]
        if hs:
            edges, counts = _rebin(hs)
            ax.stairs(_share(counts), edges, label=f"{label} ({int(counts.sum())})", **look)
    if ax.patches:
        ax.legend(fontsize=8)
    ax.set_title(f"{name}: solution length, round {last}", color=color)
    ax.set_xlabel("length (characters)")
    ax.set_ylabel("share of texts")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3)


def _success_panel(ax: Axes, name: str, rs: list[RunMetrics], first: int, last: int,
                   color: Any) -> None:
    """How many pool queries got 0..K correct first-pass samples, rounds `first` and `last`."""
    cpq = {k: [r.histograms[k]["correct_per_query"] for r in rs
               if k in r.histograms and "correct_per_query" in r.histograms[k]]
           for k in dict.fromkeys([first, last])}
    width = 0.8 / len(cpq)
    for j, (k, hs) in enumerate(cpq.items()):
        if not hs:
            continue
        counts = np.zeros(max(len(h) for h in hs))
        for h in hs:
            counts[:len(h)] += h
        x = np.arange(len(counts)) + (j - (len(cpq) - 1) / 2) * width
        is_last = k == last and len(cpq) > 1
        ax.bar(x, _share(counts), width=width, label=f"round {k}",
               color=color if is_last or len(cpq) == 1 else "0.75",
               edgecolor="0.3" if not is_last else color, lw=0.6)
    ax.set_title(f"{name}: correct samples per query", color=color)
    K = max((len(h) - 1 for hs in cpq.values() for h in hs), default=0)
    ax.set_xlabel(f"correct first-pass samples of the query (out of K = {K})")
    ax.set_ylabel("share of pool queries")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


FIGURES = [
    ("train_share", "Training-set mix by difficulty", fig_train_share,
     "Each bar splits one round's accepted training rows by difficulty level (darker = harder) "
     "next to the hatched query-pool bar, with the hardest level's share printed on top, so a "
     "hardest slice that shrinks below its pool share round after round is tail narrowing."),
    ("tail", "Tail ratio and hardest-level coverage", fig_tail,
     "Left: the hardest level's share of the training set divided by its share of the pool "
     "(dashed line at 1 = no narrowing, below it the hardest queries are under-represented); "
     "right: the share of hardest-level pool queries that got at least one accepted sample."),
    ("acc", "Test accuracy per difficulty level", fig_acc,
     "One panel per arm and one line per difficulty level, showing test pass@1 within each level "
     "round by round, so gains that come only from easy levels are visible as flat dark lines."),
    ("diversity", "Diversity of accepted solutions", fig_diversity,
     "Each panel is one diversity figure of docs/metrics.md per round and arm (higher is more diverse, "
     "except self-BLEU, where lower is), so converging solution styles show as falling lines."),
    ("budget", "Quality at equal generation budget", fig_budget,
     "Test pass@1 against the cumulative policy tokens generated so far (points labelled by round), "
     "so arms are compared at equal budget: the better arm is the higher curve at the same x, "
     "not the one that ends higher after spending more."),
]
