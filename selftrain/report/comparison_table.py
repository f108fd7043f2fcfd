"""The arm comparison as `selftrain compare` prints it when it ends: per (arm, reference) pair a
table of rounds × figures that fits the terminal (report.md has the full table).

A row is one figure at one round: both arms' means (mean over seeds), the difference, its
interval and a short verdict; each round starts with both arms' `gen_tokens`, the budget the
figures were bought with. Cells equal by construction say why instead of `+0.000`.
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType

from selftrain.report.comparison import signed, tokens_text
from selftrain.terminal_tables import fitted_table


def _verdict(cell: dict[str, Any]) -> str:
    """`none (±0.08)` for "no difference detected" with its mde (the title says so)."""
    if cell["verdict"] == "no difference detected" and cell.get("mde") is not None:
        return f"none (±{cell['mde']:.2f})"
    return cell["verdict"]


def _mean(cell: dict[str, Any], side: str) -> str:
    value = cell.get(f"{side}_mean")
    text = "–" if value is None else f"{value:.3f}"
    queries = cell.get(f"{side}_queries")
    return text if queries is None else f"{text} ({queries:.0f})"  # report.md: unrounded


def _short(key: str) -> str:
    """A format or policy figure's key as the terminal shows it (report.md has the full key)."""
    return (key.replace("eval_format_share/", "format/")
            .replace("eval_dominant_format_share", "dominant_format")
            .replace("eval_format_entropy", "format_entropy")
            .replace("eval_distinct_n", "distinct_n").replace("_passing", "_pass")
            .replace("eval_classes", "classes").replace("passing_pair_div", "pass_pair_div")
            .replace("eval_unknown_score_share", "unknown_score"))


def _rows(cells: list[dict[str, Any]], seeds: int) -> list[list[str]]:
    rows = []
    for k in sorted({c["round"] for c in cells}):
        at_k = [c for c in cells if c["round"] == k]
        have = len(at_k[0]["seeds"])
        label = str(k) if have == seeds else f"{k} ({have} seeds)"
        rows.append([label, "gen_tokens", tokens_text(at_k[0], "arm_gen_tokens"),
                     tokens_text(at_k[0], "reference_gen_tokens"), "", "", ""])
        for c in at_k:
            if c.get("equal") or c.get("unlike"):
                diff = str(c["equal"]) if c.get("equal") else "not comparable (pairs)"
                interval, verdict = "", ""
            else:
                diff = signed(c["diff"])
                interval = f"[{signed(c['lo'], 2)}, {signed(c['hi'], 2)}]"
                verdict = _verdict(c)
            rows.append(["", _short(c["key"]), _mean(c, "arm"), _mean(c, "reference"), diff, interval,
                         verdict])
    return rows


def comparison_tables(result: dict[str, Any]) -> list[RenderableType]:
    """One terminal table per (arm, reference) pair of a `comparison.json` structure."""
    level = round(100 * result["confidence"])
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in result["cells"]:
        by_pair.setdefault((cell["arm"], cell["reference"]), []).append(cell)
    tables = []
    for (arm, ref), cells in by_pair.items():
        title = (f"{arm} − {ref}: means over {len(result['seeds'])} seed(s), the difference "
                 f"and its {level}% paired-bootstrap interval; none (±d): no difference "
                 "detected, d what it could detect; distinct_paths (n): over n queries")
        tables.append(fitted_table(title, ["round", "figure", arm, ref, "difference",
                                           f"{level}% interval", "verdict"],
                                   _rows(cells, len(result["seeds"])), left=2))
    return tables
