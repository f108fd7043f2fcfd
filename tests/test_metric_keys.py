"""One reading of `@H` and of the table key lists, in the terminal tables and the report."""

from __future__ import annotations

import io
import re

from rich.console import Console

from selftrain.metrics.keys import hardest_key, level_keys, levels, resolve_key

ROUND = {"pass@1": 0.5, "acc@2": 0.7, "acc@10": 0.1, "acc@3": 0.4, "coverage@2": 1.0,
         "coverage@10": 0.25, "coverage": 0.6, "gen_tokens": 1234}


def test_levels_sort_by_number_and_hardest_is_the_largest():
    assert levels(ROUND, "acc") == ["2", "3", "10"]  # 10 after 3: numbers, not strings
    assert level_keys(ROUND, "coverage") == ["coverage@2", "coverage@10"]
    assert hardest_key(ROUND, "acc") == "acc@10"
    assert hardest_key(ROUND, "train_share") is None
    assert resolve_key("coverage@H", ROUND) == "coverage@10"
    assert resolve_key("pass@1", ROUND) == "pass@1"
    assert resolve_key("acc@H", {"pass@1": 0.1}) == "acc@H"  # nothing to resolve: left as is
    assert levels(["acc@hard", "acc@2"], "acc") == ["2", "hard"]  # names after numbers


def _rows(table) -> list[list[str]]:
    """The rendered table's header and body rows as lists of cell texts."""
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(table)
    lines = [line for line in console.export_text().splitlines() if line.startswith(("│", "┃"))]
    return [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in lines]


def test_terminal_tables_show_the_hardest_level():
    from selftrain.experiments.compare import arms_round_table
    from selftrain.tracking import run_progress_table

    two_seeds = {0: {1: ROUND}, 1: {1: {**ROUND, "pass@1": 0.7}}}
    header, rs, critique = _rows(arms_round_table(
        "exp", 1, {"rs": two_seeds, "critique": {0: {1: {**ROUND, "acc@10": 0.3}}}}))
    assert header[:5] == ["arm", "seeds", "pass@1", "acc@H", "coverage@H"]
    # the mean over seeds; acc@H and coverage@H hold level 10's values, gen_tokens is a count
    assert rs[:5] == ["rs", "2", "0.600", "0.100", "0.250"] and "1234" in rs
    assert critique[:4] == ["critique", "1", "0.500", "0.300"]

    header, *rounds = _rows(run_progress_table("exp · rs · seed 0", {0: ROUND, 1: ROUND}))
    assert header[-4:] == ["acc@2", "acc@3", "acc@10", "coverage@10"]
    assert [r[0] for r in rounds] == ["0", "1"] and rounds[1][-2:] == ["0.100", "0.250"]
