"""Reports a reader trusts at a glance: rates on the whole [0, 1] axis, "one seed" where there is
no band, `distinct_paths` with its number of queries, `gen_tokens` beside every difference,
cells equal by construction saying why, and terminal tables within 100 columns."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import yaml
from rich.cells import cell_len
from rich.console import Console
from rich.constrain import Constrain
from test_bootstrap import _test_table, make_experiment
from test_report import fake_metrics, make_run, table_row

from selftrain.experiments.compare import arms_round_table
from selftrain.metrics.bootstrap import SeedPair
from selftrain.report import write_report
from selftrain.report.comparison import compare_runs, comparison_markdown, equal_reason
from selftrain.report.comparison_table import comparison_tables
from selftrain.report.figures import arm_styles, fig_budget, fig_diversity, fig_tail
from selftrain.report.runs import find_runs
from selftrain.tracking import run_progress_table


def _by_arm(root) -> dict:
    by_arm: dict = {}
    for run in find_runs([root], []):
        by_arm.setdefault(run.arm, []).append(run)
    return by_arm


def _noisy(arm: str, seed: int, k: int) -> dict:
    """embed_div wanders within 0.129–0.139 (one seed's noise); 12 or 11 queries of paths."""
    return {**fake_metrics(arm, seed, k), "embed_div": 0.129 + 0.01 * ((k + seed) % 2),
            "distinct_paths_queries": 12 - seed}


def _panel(fig, title: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title))


def test_rates_on_the_unit_axis_and_one_seed_says_so(tmp_path):
    root = tmp_path / "runs"
    for arm in ("rs", "critique"):
        make_run(root, "cd", arm, 0, {k: _noisy(arm, 0, k) for k in range(3)})
    by_arm = _by_arm(root)
    styles = arm_styles(list(by_arm))
    fig = fig_diversity("cd", by_arm, styles)
    embed = _panel(fig, "embedding diversity")
    lo, hi = embed.get_ylim()
    assert lo <= 0.0 and hi >= 1.0  # not zoomed to 0.129–0.139
    line = next(x for x in embed.lines if x.get_label() == "rs")
    assert np.allclose(line.get_ydata(), [_noisy("rs", 0, k)["embed_div"] for k in range(3)])
    paths = _panel(fig, "distinct solution paths")  # a count, not a rate: its own scale
    assert paths.get_ylim()[1] < 3.5
    assert "mean over 12 queries" in paths.get_title()
    budget = fig_budget("cd", by_arm, styles)
    assert budget.axes[0].get_ylim()[0] <= 0.0 and budget.axes[0].get_ylim()[1] >= 1.0
    for f in (fig, budget, fig_tail("cd", by_arm, styles)):
        title = f.get_suptitle()
        assert "one seed" in title and "band" not in title, title


def test_several_seeds_keep_their_band_and_name_the_single_seed_arm(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        make_run(root, "cd", "rs", seed, {k: _noisy("rs", seed, k) for k in range(2)})
    make_run(root, "cd", "critique", 0, {k: _noisy("critique", 0, k) for k in range(2)})
    by_arm = _by_arm(root)
    fig = fig_diversity("cd", by_arm, arm_styles(list(by_arm)))
    assert "band: min–max over seeds; one seed: critique" in fig.get_suptitle()
    assert "mean over 11–12 queries" in _panel(fig, "distinct solution paths").get_title()

    text = write_report([root], tmp_path / "out").read_text()
    cols = [c.strip().strip("`") for c in next(
        x for x in text.splitlines() if x.startswith("| round | arm |")).strip("|").split("|")]
    row = table_row(text, 1, "rs")
    assert row[cols.index("distinct_paths")].endswith(" (11–12)")
    assert table_row(text, 1, "critique")[cols.index("distinct_paths")] == f"{2.4:.3f} (12)"


def _rendered(renderable) -> list[str]:
    """The lines as printed on a wide terminal, without the 100-column backstop (which would
    wrap a too wide table's cells, and so hide that it does not fit)."""
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(renderable.renderable if isinstance(renderable, Constrain) else renderable)
    return console.export_text().splitlines()


def test_equal_by_construction_cells_say_why_and_keep_their_numbers(tmp_path):
    make_experiment(tmp_path)
    for path in tmp_path.glob("*/seed*/round_*/metrics.json"):  # a budget per arm and round
        m = json.loads(path.read_text())
        arm, k = path.parts[-4], int(path.parts[-2][-1])
        m["gen_tokens"] = 1000 * (k + 1) + (500 if arm == "critique" else 0)
        path.write_text(json.dumps(m))
    result = compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=200)
    cells = {(c["round"], c["figure"]): c for c in result["cells"]}
    # Round 0: both arms sample the base policy, so the test figures are equal by construction;
    # the pool figures are not (critique trains on every level-3 query).
    for fig in ("pass@1", "acc@H"):
        c = cells[0, fig]
        assert c["equal"] == "same policy" and (c["diff"], c["lo"], c["hi"]) == (0.0, 0.0, 0.0)
    assert cells[0, "coverage@H"]["equal"] is None
    assert cells[1, "pass@1"]["equal"] is None  # equal in this data, not by construction
    assert (cells[1, "pass@1"]["arm_gen_tokens"], cells[1, "pass@1"]["reference_gen_tokens"]) \
        == (2500, 2000)
    # distinct_paths is a mean over the queries with 2 or more accepted rows, mean over seeds
    want = np.mean([(pd.read_parquet(tmp_path / "critique" / f"seed{s}" / "round_1" /
                                     "train.parquet").groupby("query_id").size() >= 2).sum()
                    for s in (0, 1, 2)])
    assert cells[1, "distinct_paths"]["arm_queries"] == want > 0
    assert cells[1, "pass@1"]["arm_queries"] is None

    lines = comparison_markdown(result)
    assert "| round | seeds | `gen_tokens` (critique / rs) |" in "\n".join(lines)
    row0 = next(x for x in lines if x.startswith("| 0 | 3 |"))
    assert row0.startswith("| 0 | 3 | 1,500 / 1,000 | same policy | same policy | ")
    assert "+0.000 [+0.000, +0.000]" not in row0
    row1 = next(x for x in lines if x.startswith("| 1 | 3 |"))
    assert "queries)" in row1 and "| 2,500 / 2,000 |" in row1

    text = "\n".join(line for t in comparison_tables(result) for line in _rendered(t))
    assert max(map(cell_len, text.splitlines())) <= 100
    assert "same policy" in text and "2,500" in text and "+0.000 [+0.000" not in text


def test_a_figure_that_is_zero_in_both_arms_reads_0_in_both():
    # the hardest level (2) solved by neither arm; the easy level by both, unequally
    a = _test_table([0.5, 0.0, 0.0], levels=[1, 2, 2])
    b = _test_table([0.25, 0.0, 0.0], levels=[1, 2, 2])
    assert equal_reason(1, "acc@H", [SeedPair(a, b)]) == "0 in both"
    assert equal_reason(1, "pass@1", [SeedPair(a, b)]) is None
    assert equal_reason(0, "pass@1", [SeedPair(a, a.copy())]) == "same policy"
    assert equal_reason(0, "pass@1", [SeedPair(a, b)]) is None
    assert equal_reason(1, "pass@1", [SeedPair(a, a.copy())]) is None  # not by construction


def test_terminal_tables_fit_100_columns():
    history = {k: {**fake_metrics("rs", 0, k), **{f"acc@{L}": 0.5 for L in (1, 6)},
                   "coverage@6": 0.25, "train_size": 1234} for k in range(3)}
    lines = _rendered(run_progress_table("cd · rs · seed 0", history))
    assert max(map(cell_len, lines)) <= 100
    header = next(line for line in lines if line.startswith("┃"))
    assert "pass@1" in header and "acc@1" in header and "acc@6" in header
    assert "not shown: narrowing_kl" in "\n".join(lines)

    arms = ["rs", "critique", "rs_budget", "critique_noisy"]
    results = {a: {s: {1: {**fake_metrics("rs", s, 1), "distinct_paths_queries": 12}}
                   for s in (0, 1)} for a in arms}
    lines = _rendered(arms_round_table("countdown_compare", 1, results))
    assert max(map(cell_len, lines)) <= 100
    body = "\n".join(lines)
    assert "gen_tokens" in body and "coverage@H" in body
    assert "critique_noisy" in body and "(12)" in body and "report.md" in body


def test_pool_figures_of_a_dpo_arm_read_not_comparable(tmp_path):
    """A dpo arm writes no training rows, so its coverage / tail_ratio / distinct_paths against
    an SFT arm compare pairs with nothing: the cells say so (test figures stay compared)."""
    make_experiment(tmp_path)
    for seed in (0, 1, 2):
        path = tmp_path / "critique" / f"seed{seed}" / "config.yaml"
        cfg = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**cfg, "train": {**cfg.get("train", {}),
                                                          "objective": "dpo"}}))
    result = compare_runs(tmp_path, ["rs", "critique"], [0, 1, 2], "rs", resamples=200)
    for c in result["cells"]:
        if c["queries"] == "pool":
            assert c["unlike"].startswith("not comparable: critique learn(s) from pairs")
        else:
            assert c["unlike"] is None
    row1 = next(x for x in comparison_markdown(result) if x.startswith("| 1 | 3 |"))
    assert "not comparable" in row1 and "[" in row1  # pass@1 still has its interval
