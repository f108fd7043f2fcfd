"""`selftrain report` on hand-built run folders: figures exist and are real images, the table
holds the mean over seeds, and sparse or damaged runs still give a report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg

from selftrain.report import report_main, write_report

LEVELS = [2, 3, 4, 5]


def fake_metrics(arm: str, seed: int, k: int) -> dict[str, Any]:
    """Plausible round-k figures: `rs` loses its hard tail round by round, `critique` less so."""
    drop = (0.05 if arm == "rs" else 0.02) * k + 0.01 * seed
    train = [0.25 + 1.5 * drop, 0.25 + 0.5 * drop, 0.25 - 0.5 * drop, 0.25 - 1.5 * drop]
    m: dict[str, Any] = {
        "pass@1": 0.30 + 0.05 * k + (0.02 if arm == "critique" else 0.0) + 0.01 * seed,
        "tail_ratio": train[-1] / 0.25,
        "narrowing_kl": 0.01 + drop / 2,
        "distinct_paths": 2.5 - (0.3 if arm == "rs" else 0.1) * k,
        "distinct_n": 0.6 - 0.05 * k,
        "self_bleu": 0.3 + 0.05 * k,
        "embed_div": None,  # disabled in this run: the figure must skip it
        "answer_entropy": 0.9 - 0.1 * k,
        "refined_share": 0.0 if arm == "rs" else 0.2,
        "gen_tokens": 10_000 + 1000 * k + (3000 if arm == "critique" else 0) + 100 * seed,
        "critic_calls": 0 if arm == "rs" else 200 + 10 * seed,
    }
    for level, share in zip(LEVELS, train):
        m[f"pool_share@{level}"] = 0.25
        m[f"train_share@{level}"] = share
        m[f"coverage@{level}"] = max(0.0, 1.0 - 0.2 * (level - 2) - drop)
        m[f"acc@{level}"] = max(0.0, 0.8 - 0.2 * (level - 2) + 0.04 * k)
    return m


def fake_histograms(arm: str, k: int) -> dict[str, Any]:
    shift = 6 * k if arm == "rs" else 2 * k
    return {"length": {"edges": [0, 10, 20, 30, 40, 50],
                       "completions": [2, 10 + shift, 12, 6, 4 - k],
                       "references": [1, 6, 10, 8, 5]},
            "correct_per_query": [8 - k, 3, 3, 2, 4 + k]}


def make_run(root: Path, experiment: str, arm: str, seed: int,
             rounds: dict[int, dict[str, Any] | str], hist_rounds: tuple[int, ...] = (),
             task: str = "countdown") -> Path:
    """A run folder per docs/design.md; a round given as a str is written verbatim (broken JSON)."""
    run = root / experiment / arm / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(
        {"experiment": experiment, "arm": arm, "seed": seed, "rounds": {}}))
    (run / "config.yaml").write_text(f"experiment: {experiment}\ntask:\n  name: {task}\n")
    for k, metrics in rounds.items():
        d = run / f"round_{k}"
        d.mkdir()
        (d / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
        if k in hist_rounds:
            (d / "histograms.json").write_text(json.dumps(fake_histograms(arm, k)))
    return run


def table_row(report: str, k: int, arm: str, experiment: str = "") -> list[str]:
    """Cells of the per-round table row for round k and arm (in that experiment's table)."""
    start = report.index(f"### Per-round table: `{experiment}") if experiment else 0
    for line in report[start:].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [str(k), arm]:
            return cells
    raise AssertionError(f"no table row for round {k} arm {arm}")


def header(report: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith("| round | arm |"))
    return [c.strip().strip("`") for c in line.strip("|").split("|")]


def assert_images(report_md: Path) -> list[str]:
    text = report_md.read_text()
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert pngs, "the report shows no figure"
    on_disk = {p.name for p in report_md.parent.glob("*.png")}
    assert set(pngs) == on_disk, "every PNG written is referenced and every reference exists"
    for name in pngs:
        img = mpimg.imread(report_md.parent / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 400 and img.shape[2] in (3, 4)
        assert img[..., :3].std() > 0.05, f"{name} is blank"
    return pngs


def test_two_arms_two_seeds(tmp_path):
    root = tmp_path / "runs"
    for arm in ("rs", "critique"):
        for seed in (0, 1):
            make_run(root, "cd", arm, seed, {k: fake_metrics(arm, seed, k) for k in range(3)},
                     hist_rounds=(0, 2) if seed == 0 else (2,))
    out = tmp_path / "out"
    report_md = write_report([root], out)

    assert report_md == out / "report.md"
    pngs = assert_images(report_md)
    assert {p.split("-", 1)[1] for p in pngs} == {
        "train_share.png", "tail.png", "acc.png", "diversity.png", "budget.png", "histograms.png"}
    text = report_md.read_text()
    assert "| cd | countdown | critique | 2 (0, 1) | 0–2 |" in text
    assert "## Left out" not in text

    cols = header(text)
    assert cols[3:6] == ["pass@1", "acc@5", "coverage@5"]
    row = table_row(text, 1, "rs")
    assert row[2] == "2"
    p0, p1 = fake_metrics("rs", 0, 1)["pass@1"], fake_metrics("rs", 1, 1)["pass@1"]
    assert row[cols.index("pass@1")] == f"{(p0 + p1) / 2:.3f} ± {abs(p0 - p1) / 2 ** 0.5:.3f}"
    g = [fake_metrics("critique", s, 2)["gen_tokens"] for s in (0, 1)]
    assert table_row(text, 2, "critique")[cols.index("gen_tokens")].startswith(f"{sum(g) / 2:,.0f} ±")
    assert table_row(text, 0, "rs")[cols.index("acc@5")] == "0.200 ± 0.000"


def test_sparse_and_damaged_runs_still_report(tmp_path):
    root = tmp_path / "runs"
    # Single seed, single round, nulls, a NaN and missing keys (no acc@L, no diversity at all).
    sparse = {"pass@1": None, "tail_ratio": float("nan"), "gen_tokens": 500,
              "train_share@1": 1.0, "train_share@2": 0.0, "pool_share@1": 0.5,
              "pool_share@2": 0.5, "coverage@2": 0.0}
    one = make_run(root, "search", "rs", 3, {0: sparse}, task="nq")
    # A second experiment (another task, other levels) with one round that is broken JSON and
    # one run that has not finished a round yet.
    make_run(root, "math", "rs", 0, {0: fake_metrics("rs", 0, 0), 1: "{not json"})
    make_run(root, "math", "critique", 0, {})
    out = tmp_path / "report"
    report_md = write_report([one, root / "math"], out)

    text = report_md.read_text()
    assert_images(report_md)
    assert "## Experiment `search`" in text and "## Experiment `math`" in text
    assert not (out / "search-acc.png").exists() and not (out / "search-diversity.png").exists()
    assert "## Left out" in text and "round_1/metrics.json` could not be read" in text
    assert "has no `round_<k>/metrics.json` yet" in text
    row = table_row(text, 0, "rs", "search")  # single seed, so no ±
    assert row[3] == "–" and row[2] == "1" and "±" not in "".join(row)


def test_report_main_default_out_and_errors(tmp_path, capsys):
    run = make_run(tmp_path / "runs", "cd", "rs", 0, {0: fake_metrics("rs", 0, 0)})
    assert report_main([str(run)], None) == 0
    assert (run / "report" / "report.md").is_file()
    assert report_main([str(tmp_path / "empty")], None) == 2
    (tmp_path / "nothing").mkdir()
    assert report_main([str(tmp_path / "nothing")], None) == 2
    assert "no run folder" in capsys.readouterr().err
