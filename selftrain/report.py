"""`selftrain report`: figures and a markdown summary of the run folders of one or more experiments.

The report reads only the run-folder contract (manifest.json, config.yaml, round_<k>/metrics.json
and, when present, round_<k>/histograms.json), so it works on finished, running, partial or
copied runs without Ray, a model or wandb. Figures are grouped per experiment, because
experiments may use different tasks (different levels, different scales); each arm keeps one
colour across every figure. Several seeds of an arm are shown as a mean line with a min–max band
and as mean ± std in the tables.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, MaxNLocator, PercentFormatter

# Not a METRICS.md key: derived here (per seed, then averaged) for the equal-budget figure.
CUM_TOKENS = "gen_tokens_cumulative"
DIVERSITY_LABELS = {
    "distinct_paths": ("distinct solution paths", "distinct solutions per query (count)"),
    "distinct_n": ("distinct-n (n = 1..4)", "unique / total n-grams (ratio)"),
    "ead": ("expectation-adjusted distinct-n", "EAD (ratio)"),
    "self_bleu": ("self-BLEU-4 (lower = more diverse)", "BLEU-4 against same-query others (0–1)"),
    "embed_div": ("embedding diversity", "1 − mean cosine similarity"),
    "answer_entropy": ("final-answer entropy", "entropy of first-pass answers (nats)"),
}
TABLE_KEYS = ["pass@1", "acc@H", "coverage@H", "tail_ratio", "narrowing_kl", "distinct_paths",
              "refined_share", "gen_tokens", "critic_calls"]
COUNT_KEYS = {"gen_tokens", "critic_calls"}
PANEL_W, PANEL_H = 4.2, 3.3


@dataclass
class Run:
    """One run folder's metrics and histograms, keyed by round."""

    experiment: str
    arm: str
    seed: str
    path: Path
    task: str | None
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    histograms: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Stat:
    """One figure of one round over the seeds that have it (std is the sample std, 0 for n=1)."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int


# ------------------------------------------------------------------------------------------------
# Reading run folders
# ------------------------------------------------------------------------------------------------

def find_runs(paths: list[Path], notes: list[str]) -> list[Run]:
    """Every run folder (a folder with manifest.json) at or below `paths`, each read once.

    Walking stops at a run folder, so checkpoints and parquet files are never listed. Problems
    that should not stop a report (unreadable files, duplicate runs) are appended to `notes`.
    """
    found: dict[tuple[str, str, str], Run] = {}
    seen: set[Path] = set()
    for top in paths:
        if not top.is_dir():
            raise FileNotFoundError(f"{top} is not a folder; pass a run folder "
                                    f"(<root>/<experiment>/<arm>/seed<s>) or a folder above one")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            if "manifest.json" not in filenames:
                continue
            dirnames.clear()
            path = Path(dirpath).resolve()
            if path in seen:
                continue
            seen.add(path)
            run = _read_run(path, notes)
            if run is None:
                continue
            key = (run.experiment, run.arm, run.seed)
            if key in found:
                notes.append(f"`{path}` is experiment {key[0]!r} arm {key[1]!r} seed {key[2]} "
                             f"again (first seen at `{found[key].path}`); it is left out")
                continue
            found[key] = run
    return sorted(found.values(), key=lambda r: (r.experiment, r.arm, _sort_key(r.seed)))


def _read_run(path: Path, notes: list[str]) -> Run | None:
    manifest = _read_json(path / "manifest.json", notes)
    if manifest is None:
        return None
    # Runs that died before the driver recorded its meta still follow the folder layout.
    seed = str(manifest.get("seed", path.name.removeprefix("seed")))
    run = Run(experiment=str(manifest.get("experiment", path.parent.parent.name)),
              arm=str(manifest.get("arm", path.parent.name)), seed=seed, path=path,
              task=_task_name(path / "config.yaml"))
    rounds = [(int(m.group(1)), d) for d in path.iterdir()
              if d.is_dir() and (m := re.fullmatch(r"round_(\d+)", d.name))]
    for k, d in sorted(rounds):
        if (d / "metrics.json").is_file():
            metrics = _read_json(d / "metrics.json", notes)
            if metrics is not None:
                run.metrics[k] = metrics
        if (d / "histograms.json").is_file():
            hist = _read_json(d / "histograms.json", notes)
            if hist is not None:
                run.histograms[k] = hist
    total: float | None = 0.0
    for k in sorted(run.metrics):  # once a round lacks gen_tokens, the running sum is unknown
        step = _num(run.metrics[k].get("gen_tokens"))
        total = None if total is None or step is None else total + step
        run.metrics[k][CUM_TOKENS] = total
    if not run.metrics:
        notes.append(f"`{path}` has no `round_<k>/metrics.json` yet; it is left out")
        return None
    return run


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        notes.append(f"`{path}` could not be read ({err}); it is left out")
        return None
    if not isinstance(obj, dict):
        notes.append(f"`{path}` is not a JSON object; it is left out")
        return None
    return obj


def _task_name(path: Path) -> str | None:
    try:
        task = (yaml.safe_load(path.read_text()) or {}).get("task") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return str(task["name"]) if isinstance(task, dict) and "name" in task else None


# ------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ------------------------------------------------------------------------------------------------

def _num(value: Any) -> float | None:
    """A finite number, or None for null, NaN, inf and non-numbers (metrics may be any of them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _stat(values: list[Any]) -> Stat | None:
    nums = np.array([v for v in map(_num, values) if v is not None])
    if not len(nums):
        return None
    std = float(nums.std(ddof=1)) if len(nums) > 1 else 0.0
    return Stat(float(nums.mean()), std, float(nums.min()), float(nums.max()), len(nums))


def series(runs: list[Run], key: str) -> dict[int, Stat]:
    """round -> `key` over the seeds in `runs` (rounds where no seed has a number are absent)."""
    out = {}
    for k in sorted({k for r in runs for k in r.metrics}):
        stat = _stat([r.metrics[k].get(key) for r in runs if k in r.metrics])
        if stat is not None:
            out[k] = stat
    return out


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def levels(runs: list[Run], prefix: str) -> list[str]:
    """Difficulty levels that `prefix@L` keys name, sorted (numerically where they are numbers)."""
    found = {key.split("@", 1)[1] for r in runs for m in r.metrics.values() for key in m
             if key.startswith(prefix + "@")}
    return sorted(found, key=_sort_key)


def hardest_key(runs: list[Run], prefix: str) -> str | None:
    """`prefix@H` for the hardest level of the experiment (METRICS.md: the largest level)."""
    found = levels(runs, prefix)
    return f"{prefix}@{found[-1]}" if found else None


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

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


def _arm_label(arm: str, runs: list[Run]) -> str:
    return f"{arm} ({len(runs)} seeds)" if len(runs) > 1 else arm


def fig_train_share(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle]) -> Figure | None:
    lv = levels([r for rs in by_arm.values() for r in rs], "train_share")
    if not lv:
        return None
    lcol = level_colors(lv)
    fig, axes = _grid(len(by_arm), 3)
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


def fig_tail(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle]) -> Figure | None:
    runs = [r for rs in by_arm.values() for r in rs]
    cov = hardest_key(runs, "coverage")
    H = cov.split("@")[1] if cov else (levels(runs, "pool_share") or ["H"])[-1]
    panels = [("tail_ratio", f"tail ratio (hardest level {H})", "train share ÷ pool share of level "
               f"{H}")]
    if cov:
        panels.append((cov, f"coverage of hardest level {H}",
                       f"share of level-{H} pool queries\nwith ≥ 1 accepted row"))
    if not any(series(rs, key) for key, _, _ in panels for rs in by_arm.values()):
        return None
    fig, axes = _grid(len(panels), 2, sharey=False)
    for ax, (key, title, ylabel) in zip(axes, panels):
        for arm, rs in by_arm.items():
            _line(ax, series(rs, key), styles[arm].color, _arm_label(arm, rs), styles[arm].marker)
        if key == "tail_ratio":
            if ax.lines:  # a reference line on an empty panel would read as data
                ax.axhline(1.0, ls="--", color="0.3", lw=1.2, label="1 = no narrowing")
        else:
            ax.set_ylim(-0.02, 1.05)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _round_axis(ax)
    _legend(fig, axes, "arm")
    _suptitle(fig, f"{exp}: tail narrowing per round (band: min–max over seeds)")
    return fig


def fig_acc(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle]) -> Figure | None:
    lv = levels([r for rs in by_arm.values() for r in rs], "acc")
    if not lv:
        return None
    lcol = level_colors(lv)
    fig, axes = _grid(len(by_arm), 3)
    for ax, (arm, rs) in zip(axes, by_arm.items()):
        for L in lv:
            _line(ax, series(rs, f"acc@{L}"), lcol[L], f"level {L}")
        ax.set_title(_arm_label(arm, rs), color=styles[arm].color, fontweight="bold")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        _round_axis(ax)
    _first_col_ylabel(axes, "test pass@1 within level")
    _legend(fig, axes, "difficulty (easy → hard)")
    _suptitle(fig, f"{exp}: test accuracy per difficulty level (band: min–max over seeds)")
    return fig


def fig_diversity(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle]) -> Figure | None:
    keys = [k for k in DIVERSITY_LABELS if any(series(rs, k) for rs in by_arm.values())]
    if not keys:
        return None
    fig, axes = _grid(len(keys), 3, sharey=False)
    for ax, key in zip(axes, keys):
        for arm, rs in by_arm.items():
            _line(ax, series(rs, key), styles[arm].color, _arm_label(arm, rs), styles[arm].marker)
        title, ylabel = DIVERSITY_LABELS[key]
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _round_axis(ax)
    _legend(fig, axes, "arm")
    _suptitle(fig, f"{exp}: diversity of accepted solutions per round (band: min–max over seeds)")
    return fig


def fig_budget(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle]) -> Figure | None:
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
    ax.grid(alpha=0.3)
    ax.legend(title="arm (rK = after round K)", loc="best")
    _suptitle(fig, f"{exp}: test pass@1 against generation budget (band: min–max over seeds)")
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


def fig_histograms(exp: str, by_arm: dict[str, list[Run]],
                   styles: dict[str, ArmStyle]) -> tuple[Figure | None, str]:
    """Length (last round) and correct-per-query (first vs last round), one row per arm."""
    if not any(r.histograms for rs in by_arm.values() for r in rs):
        return None, ""
    fig = Figure(figsize=(2 * PANEL_W + 1.2, PANEL_H * len(by_arm) + 0.6), layout="constrained")
    grid = fig.subplots(len(by_arm), 2, squeeze=False)
    rounds_shown = []
    for (ax_len, ax_cpq), (arm, rs) in zip(grid, by_arm.items()):
        name = _arm_label(arm, rs)
        hk = sorted({k for r in rs for k in r.histograms})
        if not hk:
            for ax in (ax_len, ax_cpq):
                ax.text(0.5, 0.5, f"{arm}: no histograms.json", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
                ax.set_axis_off()
            continue
        first, last = hk[0], hk[-1]
        rounds_shown.append(f"{arm}: {first}→{last}")
        lengths = [r.histograms[last]["length"] for r in rs
                   if last in r.histograms and "edges" in r.histograms[last].get("length", {})]
        for key, label, look in [("completions", "accepted", {"fill": True, "alpha": 0.55,
                                                              "color": styles[arm].color}),
                                 ("references", "reference", {"color": "black", "lw": 1.5})]:
            hs = [(h["edges"], h[key]) for h in lengths if key in h]
            if hs:
                edges, counts = _rebin(hs)
                ax_len.stairs(_share(counts), edges, label=f"{label} ({int(counts.sum())})", **look)
        if ax_len.patches:
            ax_len.legend(fontsize=8)
        ax_len.set_title(f"{name}: solution length, round {last}", color=styles[arm].color)
        ax_len.set_xlabel("length (characters)")
        ax_len.set_ylabel("share of texts")
        ax_len.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax_len.grid(alpha=0.3)

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
            ax_cpq.bar(x, _share(counts), width=width, label=f"round {k}",
                       color=styles[arm].color if is_last or len(cpq) == 1 else "0.75",
                       edgecolor="0.3" if not is_last else styles[arm].color, lw=0.6)
        ax_cpq.set_title(f"{name}: correct samples per query", color=styles[arm].color)
        K = max((len(h) - 1 for hs in cpq.values() for h in hs), default=0)
        ax_cpq.set_xlabel(f"correct first-pass samples of the query (out of K = {K})")
        ax_cpq.set_ylabel("share of pool queries")
        ax_cpq.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_cpq.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax_cpq.legend(fontsize=8)
        ax_cpq.grid(alpha=0.3, axis="y")
    _suptitle(fig, f"{exp}: length and per-query success histograms (summed over seeds)")
    return fig, "; ".join(rounds_shown)


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(stat: Stat | None, count: bool) -> str:
    if stat is None:
        return "–"
    f = (lambda v: f"{v:,.0f}") if count else (lambda v: f"{v:.3f}")
    return f(stat.mean) if stat.n == 1 else f"{f(stat.mean)} ± {f(stat.std)}"


def round_table(by_arm: dict[str, list[Run]]) -> list[str]:
    """Markdown rows: one per (round, arm), arms of a round next to each other."""
    runs = [r for rs in by_arm.values() for r in rs]
    keys = [hardest_key(runs, k[:-2]) or k if k.endswith("@H") else k for k in TABLE_KEYS]
    lines = ["| round | arm | seeds | " + " | ".join(f"`{k}`" for k in keys) + " |",
             "|---:|:---|---:|" + "---:|" * len(keys)]
    for k in sorted({k for r in runs for k in r.metrics}):
        for arm, rs in by_arm.items():
            have = [r for r in rs if k in r.metrics]
            if not have:
                continue
            cells = [_fmt(series(have, key).get(k), key in COUNT_KEYS) for key in keys]
            lines.append(f"| {k} | {_cell(arm)} | {len(have)} | " + " | ".join(cells) + " |")
    return lines


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


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
     "Each panel is one diversity figure of METRICS.md per round and arm (higher is more diverse, "
     "except self-BLEU, where lower is), so converging solution styles show as falling lines."),
    ("budget", "Quality at equal generation budget", fig_budget,
     "Test pass@1 against the cumulative policy tokens generated so far (points labelled by round), "
     "so arms are compared at equal budget: the better arm is the higher curve at the same x, "
     "not the one that ends higher after spending more."),
]


def _experiment_section(exp: str, by_arm: dict[str, list[Run]], styles: dict[str, ArmStyle],
                        out_dir: Path) -> list[str]:
    lines = [f"## Experiment `{exp}`", ""]
    n = 0
    for name, title, make, sentence in FIGURES:
        fig = make(exp, by_arm, styles)
        if fig is None:
            continue
        n += 1
        lines += _figure(fig, out_dir / f"{_slug(exp)}-{name}.png", f"{n}. {title}", sentence)
    fig, shown = fig_histograms(exp, by_arm, styles)
    if fig is not None:
        n += 1
        lines += _figure(
            fig, out_dir / f"{_slug(exp)}-histograms.png", f"{n}. Length and per-query success",
            "Left: character lengths of the last round's accepted solutions against the task's "
            "reference solutions (a shift to the left means short, easy solutions crowd out long "
            "ones); right: how many pool queries got 0, 1, …, K correct first-pass samples in the "
            f"first and last round with histograms ({shown}), where the mass at 0 is the tail "
            "that rejection sampling cannot learn from.")
    runs = [r for rs in by_arm.values() for r in rs]
    hard = [k for k in (hardest_key(runs, "acc"), hardest_key(runs, "coverage")) if k]
    lines += [f"### Per-round table: `{exp}`", "",
              "Mean ± sample std over seeds where an arm has several; "
              + (f"{' and '.join(f'`{k}`' for k in hard)} show the hardest level; " if hard else "")
              + "`gen_tokens` and `critic_calls` are per round, not cumulative.", ""]
    return lines + round_table(by_arm) + [""]


def _figure(fig: Figure, path: Path, title: str, sentence: str) -> list[str]:
    fig.savefig(path, dpi=110)
    return [f"### {title}", "", f"![{title}]({path.name})", "", sentence, ""]


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write figures and report.md for every run folder at or below `run_dirs`; return report.md.

    Raises FileNotFoundError when a path is not a folder or no run folder holds any metrics.
    """
    notes: list[str] = []
    runs = find_runs([Path(p) for p in run_dirs], notes)
    if not runs:
        detail = "".join(f"\n  {n}" for n in notes)
        raise FileNotFoundError(
            f"no run folder with round_<k>/metrics.json under {', '.join(map(str, run_dirs))}; "
            f"a run folder is <root>/<experiment>/<arm>/seed<s>/ with a manifest.json{detail}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    styles = arm_styles([r.arm for r in runs])
    experiments: dict[str, dict[str, list[Run]]] = {}
    for r in runs:
        experiments.setdefault(r.experiment, {}).setdefault(r.arm, []).append(r)

    lines = ["# selftrain report", "",
             f"{len(runs)} run folders from {', '.join(f'`{p}`' for p in run_dirs)}. Where an arm "
             "has several seeds, lines are the mean over seeds with a shaded min–max band, and "
             "tables show mean ± std.", "",
             "| experiment | task | arm | seeds | rounds |", "|:---|:---|:---|:---|---:|"]
    for exp, by_arm in experiments.items():
        for arm, rs in by_arm.items():
            tasks = sorted({r.task for r in rs if r.task}) or ["?"]
            rounds = sorted({k for r in rs for k in r.metrics})
            span = f"{rounds[0]}–{rounds[-1]}" if len(rounds) > 1 else str(rounds[0])
            lines.append(f"| {_cell(exp)} | {_cell(', '.join(tasks))} | {_cell(arm)} | "
                         f"{len(rs)} ({', '.join(r.seed for r in rs)}) | {span} |")
    lines.append("")
    for exp, by_arm in experiments.items():
        lines += _experiment_section(exp, by_arm, styles, out_dir)
    if notes:
        lines += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def report_main(paths: list[str], out: str | None) -> int:
    """CLI entry: report on `paths` into `out` (default `<first path>/report`); exit code."""
    if not paths:
        print("error: name at least one run or experiment folder", file=sys.stderr)
        return 2
    try:
        report = write_report([Path(p) for p in paths], Path(out or Path(paths[0]) / "report"))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0
