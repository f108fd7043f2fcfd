"""report.md: the run list, each experiment's figures with a sentence on how to read them, its
per-round table of arms, and what was left out."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from matplotlib.figure import Figure

from selftrain.metrics.keys import (
    ARM_TABLE_KEYS,
    COUNT_KEYS,
    GRADED_TABLE_KEYS,
    PATHS_QUERIES,
    hardest_key,
    over_queries,
    resolve_key,
)
from selftrain.report.comparison import comparison_markdown
from selftrain.report.figures import FIGURES, ArmStyle, ByArm, arm_styles, fig_histograms
from selftrain.report.policy_figures import POLICY_FIGURES
from selftrain.report.runs import RunMetrics, Stat, find_runs, metric_keys, series


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fmt(stat: Stat | None, count: bool) -> str:
    if stat is None:
        return "–"
    f = (lambda v: f"{v:,.0f}") if count else (lambda v: f"{v:.3f}")
    return f(stat.mean) if stat.n == 1 else f"{f(stat.mean)} ± {f(stat.std)}"


def per_round_table(by_arm: ByArm) -> list[str]:
    """Markdown rows: one per (round, arm), arms of a round next to each other."""
    runs = [r for rs in by_arm.values() for r in rs]
    present = metric_keys(runs)
    keys = [resolve_key(k, present) for k in ARM_TABLE_KEYS]
    keys += [k for k in GRADED_TABLE_KEYS if k in present]  # graded tasks only
    lines = ["| round | arm | seeds | " + " | ".join(f"`{k}`" for k in keys) + " |",
             "|---:|:---|---:|" + "---:|" * len(keys)]
    for k in sorted({k for r in runs for k in r.metrics}):
        for arm, rs in by_arm.items():
            have = [r for r in rs if k in r.metrics]
            if not have:
                continue
            cells = [_fmt(series(have, key).get(k), key in COUNT_KEYS) for key in keys]
            if "distinct_paths" in keys and cells[keys.index("distinct_paths")] != "–":
                cells[keys.index("distinct_paths")] += over_queries(
                    [r.metrics[k].get(PATHS_QUERIES) for r in have])
            lines.append(f"| {k} | {_cell(arm)} | {len(have)} | " + " | ".join(cells) + " |")
    return lines


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"


def _experiment_section(exp: str, by_arm: ByArm, styles: dict[str, ArmStyle],
                        out_dir: Path) -> list[str]:
    lines = [f"## Experiment `{exp}`", ""]
    n = 0
    for name, title, make, sentence in FIGURES + POLICY_FIGURES:
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
    keys = metric_keys(runs)
    hard = [k for k in (hardest_key(keys, "acc"), hardest_key(keys, "coverage")) if k]
    lines += [f"### Per-round table: `{exp}`", "",
              "Mean ± sample std over seeds where an arm has several; "
              + (f"{' and '.join(f'`{k}`' for k in hard)} show the hardest level; " if hard else "")
              + "`gen_tokens` and `critic_calls` are per round, not cumulative; `distinct_paths` "
              "is a mean over the pool queries with 2 or more accepted solutions, how many in "
              "brackets.", ""]
    return lines + per_round_table(by_arm) + [""] + _comparison_section(exp, runs)


def _comparison_section(exp: str, runs: list[RunMetrics]) -> list[str]:
    """The arm comparison of `comparison.json` in the experiment's folder, when there is one."""
    found = sorted(p for p in {r.path.parent.parent / "comparison.json" for r in runs}
                   if p.is_file())
    if not found:
        return []
    lines = [f"### Arm comparisons: `{exp}`", ""]
    try:
        return lines + comparison_markdown(json.loads(found[0].read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        return lines + [f"`{found[0]}` could not be read ({err!r}).", ""]


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
    experiments: dict[str, ByArm] = {}
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
    lines += config_changes_section(runs)
    if notes:
        lines += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def config_changes_section(runs: list) -> list[str]:
    """Runs whose later rounds ran with another config than their first (a resume with
    --allow-config-change): which keys, from which round. Empty when none."""
    rows = [(r, c) for r in runs for c in r.config_changes]
    if not rows:
        return []
    lines = ["## Config changed on resume", "",
             "These runs' rounds do not all share one config: from `from round` on, each key "
             "below had its new value.", "",
             "| run | from round | key | before | after |", "|:---|---:|:---|:---|:---|"]
    for r, c in rows:
        for key, (old, new) in c["changes"].items():
            lines.append(f"| {_cell(f'{r.experiment}/{r.arm}/seed{r.seed}')} | "
                         f"{c['from_round']} | {_cell(key)} | {_cell(str(old))} | "
                         f"{_cell(str(new))} |")
    return lines + [""]


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
