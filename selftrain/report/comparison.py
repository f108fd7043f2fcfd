"""Arm comparisons over seeds: from an experiment's run folders to `comparison.json` and its table.

For every (arm, reference) pair and round, each figure of BOOTSTRAP_FIGURES, the policy's
diversity figures a run folder can give again (selftrain/metrics/policy_tables.py) and, for a
task with solution formats, the test split's format figures, is stated as the difference of the seed
means with a 95% paired-bootstrap interval and a verdict
(selftrain/metrics/bootstrap.py). The per-query data come from the round's parquet files; the
figure recomputed from them must equal metrics.json, or the run folder is reported as
inconsistent instead of compared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from selftrain.loop.round_metrics import RoundFrames
from selftrain.metrics.bootstrap import FIGURES, SeedPair, paired_bootstrap
from selftrain.metrics.diversity import paths_per_query, solution_keys
from selftrain.metrics.format_tables import TableFigure, format_columns, format_figures
from selftrain.metrics.keys import BOOTSTRAP_FIGURES
from selftrain.metrics.outcome import per_test_query
from selftrain.metrics.policy_tables import ORDER as POLICY_ORDER
from selftrain.metrics.policy_tables import policy_columns, policy_figures
from selftrain.metrics.tail import per_pool_query

METHOD = ("difference of the seed means (arm - reference) with a percentile interval from a "
          "paired bootstrap: seeds resampled with replacement, then within each drawn seed the "
          "test queries (test figures) or pool queries (pool figures) with replacement within "
          "each difficulty level, the same resample for both arms")


def round_tables(round_dir: Path, task: Any, policy: PolicyInputs | None = None,
                 written: dict[str, Any] | None = None) -> dict[str, pd.DataFrame]:
    """{"test": per test query, "pool": per pool query with `paths`} of one round, by query_id.

    The pool is the queries of the round's first-pass samples (every pool query has K of them).
    A task with solution formats adds each test query's `format/<name>` counts; `policy` (the
    run's tokenizer and free judge) adds its `policy/<figure>` values for the policy figures
    `written` (the round's metrics.json, read here when not given) holds.
    """
    from selftrain.tasks import abilities

    frames = RoundFrames.read(round_dir)
    first = frames.samples[frames.samples["origin"] == "sample"]
    pool = first[["query_id", "difficulty"]].drop_duplicates("query_id")
    table = per_pool_query(pool, frames.samples, frames.train)
    keys = solution_keys(frames.train["completion"].tolist(), task.solution_key, task.split_steps)
    table["paths"] = paths_per_query(frames.train["query_id"].tolist(), keys).reindex(table.index)
    test = per_test_query(frames.evals)
    formats = abilities(task).formats
    if formats is not None:
        test = test.join(format_columns(frames.evals, formats.format_of))
    if policy is not None:
        if written is None:
            written = json.loads((round_dir / "metrics.json").read_text())
        keys = [k for k in POLICY_ORDER if written.get(k) is not None]
        if keys:
            test = test.join(policy_columns(frames.evals, policy.token_ids, policy.judge, keys))
    return {"test": test, "pool": table.sort_index()}


@dataclass
class PolicyInputs:
    """What a run's policy figures are recomputed with: its tokenizer's token ids and, when the
    run's judge is the free solution-key judge, that judge (else None: no class figures)."""

    token_ids: Any
    judge: Any | None

    @classmethod
    def of_run(cls, run_dir: Path, task: Any, config: dict[str, Any] | None = None
               ) -> PolicyInputs | None:
        """None when the run folder holds no checkpoint to read the tokenizer from. config:
        the run's config.yaml (read here when not given)."""
        from transformers import AutoTokenizer

        from selftrain.judges.builtin import SolutionKeyJudge

        found = sorted(run_dir.glob("round_*/checkpoint/tokenizer_config.json"))
        if not found:
            return None
        tokenizer = AutoTokenizer.from_pretrained(found[0].parent)
        judge = (config if config is not None else run_config(run_dir)).get("judge") or {}
        free = judge.get("name", "solution-key") == "solution-key" and not judge.get("path")
        return cls(lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"],
                   SolutionKeyJudge(task) if free else None)


def run_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.yaml, as recorded (a mapping; empty when the file is)."""
    return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}


def task_of(config: dict[str, Any]) -> Any:
    """The task a recorded config names (for its solution keys)."""
    from selftrain.tasks import build_task

    task = config.get("task") or {}
    return build_task(task.get("name"), task.get("path"), task.get("args"))


class RoundTables:
    """Per-query tables of an experiment's (arm, seed, round), each read once from the run
    folder and checked against the round's metrics.json; what comparisons and
    scripts/policy_rounds.py resample. task: the experiment's (None: from the first run's
    config.yaml)."""

    def __init__(self, exp_dir: Path, task: Any | None = None) -> None:
        self.exp_dir, self.task = exp_dir, task
        self.cache: dict[tuple[str, int, int], dict[str, pd.DataFrame]] = {}
        self.policy: dict[Path, PolicyInputs | None] = {}

    def done(self, arm: str, seed: int) -> set[int]:
        """The rounds of (arm, seed) with a metrics.json."""
        run = self.exp_dir / arm / f"seed{seed}"
        return {int(p.parent.name.removeprefix("round_"))
                for p in run.glob("round_*/metrics.json")}

    def tables(self, arm: str, seed: int, k: int) -> dict[str, pd.DataFrame]:
        """{"test": ..., "pool": ...} of round k (`round_tables`), checked."""
        if (arm, seed, k) not in self.cache:
            run = self.exp_dir / arm / f"seed{seed}"
            if self.task is None or run not in self.policy:
                config = run_config(run)
                self.task = self.task or task_of(config)
                self.policy[run] = PolicyInputs.of_run(run, self.task, config)
            round_dir = run / f"round_{k}"
            written = json.loads((round_dir / "metrics.json").read_text())
            tables = round_tables(round_dir, self.task, self.policy[run], written)
            _check(tables, round_dir, written)
            self.cache[arm, seed, k] = tables
        return self.cache[arm, seed, k]


def _key(figure: str, table: pd.DataFrame) -> str:
    return figure.replace("@H", f"@{table['level'].max()}")


def figures_of(tests: list[pd.DataFrame]) -> list[tuple[str, str, TableFigure]]:
    """(figure, queries, function) of every figure compared, given the per-test-query tables
    of both arms over the seeds: BOOTSTRAP_FIGURES, then the format figures they support."""
    return ([(f, q, FIGURES[f]) for f, q in BOOTSTRAP_FIGURES.items()]
            + [(f, "test", fn) for f, fn in policy_figures(tests).items()]
            + [(f, "test", fn) for f, fn in format_figures(tests).items()])


def _check(tables: dict[str, pd.DataFrame], round_dir: Path, written: dict[str, Any]) -> None:
    """Every compared figure of the tables equals the round's metrics.json (`written`)."""
    for figure, queries, fn in figures_of([tables["test"]]):
        key = _key(figure, tables[queries])
        value = fn(tables[queries], None)
        if written.get(key) is None and value is None:
            continue
        if key in written and (value is None or written[key] is None
                               or not math.isclose(value, written[key], rel_tol=1e-9,
                                                   abs_tol=1e-12)):
            raise ValueError(
                f"{round_dir}: {key} recomputed from the round's parquet files is {value}, but "
                f"metrics.json says {written[key]}; the run folder is inconsistent "
                f"(`selftrain verify` names altered files), so it is not compared")


def compare_runs(exp_dir: str | Path, arms: Sequence[str], seeds: Sequence[int],
                 baseline: str = "rs", pairs: Sequence[tuple[str, str]] = (), *,
                 resamples: int = 2000, bootstrap_seed: int = 0, confidence: float = 0.95,
                 task: Any | None = None) -> dict[str, Any]:
    """Every arm against `baseline`, and each (arm, reference) of `pairs`, at every round that
    both finished in at least one seed: the structure `comparison.json` holds.

    Run folders are `<exp_dir>/<arm>/seed<s>`. task: the experiment's task (None: built from a
    run's config.yaml); only `distinct_paths` needs it, for the solution keys.
    """
    exp_dir = Path(exp_dir)
    missing = [a for a in {baseline, *(x for p in pairs for x in p)} if a not in arms]
    if missing:
        raise ValueError(f"comparison names arm(s) {sorted(missing)} that are not among the "
                         f"arms {list(arms)}")
    wanted = [(a, baseline) for a in arms if a != baseline] + [tuple(p) for p in pairs]
    rounds = RoundTables(exp_dir, task)
    cells = []
    for arm, ref in dict.fromkeys(wanted):
        done = {s: rounds.done(arm, s) & rounds.done(ref, s) for s in seeds}
        for k in sorted(set().union(*done.values())):
            have = [s for s in seeds if k in done[s]]
            # the budget beside every figure: a comparison is fair only at a stated budget
            tokens = {"arm_gen_tokens": _recorded(exp_dir / arm, have, k, "gen_tokens"),
                      "reference_gen_tokens": _recorded(exp_dir / ref, have, k, "gen_tokens")}
            tables = [(rounds.tables(arm, s, k), rounds.tables(ref, s, k)) for s in have]
            for figure, queries, fn in figures_of([t["test"] for pair in tables for t in pair]):
                seed_pairs = [SeedPair(a[queries], b[queries]) for a, b in tables]
                cells.append({**_cell(arm, ref, k, have, (figure, fn), queries, seed_pairs,
                                      resamples, bootstrap_seed, confidence),
                              "equal": equal_reason(k, (figure, fn), seed_pairs),
                              "unlike": unlike_reason(exp_dir, (arm, ref), queries), **tokens,
                              **_queries(figure, seed_pairs)})
    return {"baseline": baseline, "arms": list(arms), "seeds": list(seeds),
            "resamples": resamples, "bootstrap_seed": bootstrap_seed,
            "confidence": confidence, "method": METHOD, "cells": cells}


def _cell(arm: str, ref: str, k: int, seeds: list[int], figure: tuple[str, TableFigure],
          queries: str, seed_pairs: list[SeedPair], resamples: int, bootstrap_seed: int,
          confidence: float) -> dict[str, Any]:
    figure, fn = figure
    d = paired_bootstrap(seed_pairs, fn, resamples=resamples, seed=bootstrap_seed,
                         confidence=confidence)

    def mean(values: list[Any]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    return {"arm": arm, "reference": ref, "round": k, "figure": figure,
            "key": _key(figure, seed_pairs[0].arm), "queries": queries, "seeds": seeds,
            "arm_mean": mean([fn(p.arm, None) for p in seed_pairs]),
            "reference_mean": mean([fn(p.reference, None) for p in seed_pairs]),
            "diff": d.diff, "lo": d.lo, "hi": d.hi, "verdict": d.verdict,
            "mde": d.mde, "seeds_needed": d.seeds_needed,
            "seeds_used": d.seeds, "undefined_resamples": d.undefined_resamples}


def _recorded(run_root: Path, seeds: list[int], k: int, key: str) -> float | None:
    """`key` of round k's metrics.json, mean over `seeds` (None where none records it)."""
    values = [json.loads((run_root / f"seed{s}" / f"round_{k}" / "metrics.json").read_text())
              .get(key) for s in seeds]
    kept = [v for v in values if isinstance(v, (int, float))]
    return sum(kept) / len(kept) if kept else None


def equal_reason(k: int, figure: str | tuple[str, TableFigure],
                 seed_pairs: list[SeedPair]) -> str | None:
    """Why a cell is equal by construction, or None: "same policy" at round 0, where both arms
    sample the base policy (every seed's per-query tables identical), "0 in both" where the
    figure is 0 in every seed of both arms. Such a cell's `+0.000 [+0.000, +0.000]` says
    nothing about the arms, so tables print the reason instead."""
    if k == 0 and all(p.arm.equals(p.reference) for p in seed_pairs):
        return "same policy"
    fn = figure[1] if isinstance(figure, tuple) else FIGURES[figure]
    values = [fn(t, None) for p in seed_pairs for t in (p.arm, p.reference)]
    if values and all(v is not None and v == 0 for v in values):
        return "0 in both"
    return None


def unlike_reason(exp_dir: Path, arms: tuple[str, str], queries: str) -> str | None:
    """Why a pool figure cannot compare the two arms, or None: an arm that finetunes on
    preference pairs (objective dpo) writes no training rows, so its coverage, tail_ratio and
    distinct_paths count nothing; its pairs' figures (`pair_coverage@L`) say what it learns."""
    if queries != "pool":
        return None
    pairs = [a for a in arms if _objective(exp_dir / a) != "sft"]
    if not pairs:
        return None
    return f"not comparable: {' and '.join(pairs)} learn(s) from pairs (read pair_coverage@L)"


def _objective(arm_dir: Path) -> str:
    """train.objective of an arm, from its first seed's config.yaml (sft when unrecorded)."""
    for config in sorted(arm_dir.glob("seed*/config.yaml")):
        train = run_config(config.parent).get("train") or {}
        return str(train.get("objective", "sft"))
    return "sft"


def _queries(figure: str, seed_pairs: list[SeedPair]) -> dict[str, float | None]:
    """For `distinct_paths`, the pool queries it is a mean over (those with 2 or more accepted
    completions), mean over seeds; None for the other figures."""
    def count(side: str) -> float | None:
        if figure != "distinct_paths":
            return None
        return sum(int(getattr(p, side)["paths"].notna().sum()) for p in seed_pairs) / len(
            seed_pairs)

    return {"arm_queries": count("arm"), "reference_queries": count("reference")}


def verdict_text(cell: dict[str, Any]) -> str:
    """The verdict as tables print it: a null result with what it could have detected,
    "no difference detected (detectable: ±0.08)"."""
    if cell["verdict"] == "no difference detected" and cell.get("mde") is not None:
        return f"no difference detected (detectable: ±{cell['mde']:.2f})"
    return cell["verdict"]


def signed(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:+.{digits}f}".replace("-", "−")


def cell_text(cell: dict[str, Any]) -> str:
    """A comparison cell as report.md prints it: the difference, its interval and the verdict,
    or why it is equal by construction ("same policy", "0 in both")."""
    if cell.get("equal") or cell.get("unlike"):
        return str(cell.get("equal") or cell["unlike"])
    text = (f"{signed(cell['diff'])} [{signed(cell['lo'])}, {signed(cell['hi'])}] "
            f"{verdict_text(cell)}")
    if cell.get("arm_queries") is not None and cell.get("reference_queries") is not None:
        text += f" (over {cell['arm_queries']:.3g} / {cell['reference_queries']:.3g} queries)"
    return text


def tokens_text(cell: dict[str, Any], key: str) -> str:
    value = cell.get(key)
    return "–" if value is None else f"{value:,.0f}"


def comparison_markdown(result: dict[str, Any]) -> list[str]:
    """report.md lines: per (arm, reference) pair a table of rounds × figures, each cell the
    difference, its interval and the verdict, beside both arms' `gen_tokens`."""
    level = round(100 * result["confidence"])
    lines = [f"Each cell: mean over seeds of (arm − reference), its {level}% interval in "
             f"brackets and the verdict ({result['resamples']} paired-bootstrap resamples: "
             "seeds, then test or pool queries within each level; docs/metrics.md). \"same "
             "policy\": round 0, where both arms sample the base policy; \"0 in both\": the "
             "figure is 0 in every seed of both arms. `distinct_paths` is a mean over the pool "
             "queries with 2 or more accepted solutions (how many: arm / reference).", ""]
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for cell in result["cells"]:
        by_pair.setdefault((cell["arm"], cell["reference"]), []).append(cell)
    for (arm, ref), cells in by_pair.items():
        figures = list(dict.fromkeys(c["figure"] for c in cells))
        formats = [f for f in figures if f not in BOOTSTRAP_FIGURES]
        lines += [f"`{arm}` − `{ref}`:", ""]
        lines += _pair_table(cells, [f for f in figures if f not in formats], (arm, ref))
        if formats:  # a second table: the test samples' solution formats
            lines += [f"`{arm}` − `{ref}`, formats of the test samples:", ""]
            lines += _pair_table(cells, formats, (arm, ref))
    return lines


def _pair_table(cells: list[dict[str, Any]], figures: list[str],
                pair: tuple[str, str]) -> list[str]:
    """One pair's rounds × `figures` table, with both arms' `gen_tokens`, then a blank line."""
    keys = {c["figure"]: c["key"] for c in cells}
    lines = [f"| round | seeds | `gen_tokens` ({pair[0]} / {pair[1]}) | "
             + " | ".join(f"`{keys[f]}`" for f in figures) + " |",
             "|---:|---:|---:|" + "---:|" * len(figures)]
    for k in sorted({c["round"] for c in cells}):
        row = {c["figure"]: c for c in cells if c["round"] == k}
        first = next(iter(row.values()))
        tokens = (f"{tokens_text(first, 'arm_gen_tokens')} / "
                  f"{tokens_text(first, 'reference_gen_tokens')}")
        lines.append(f"| {k} | {len(first['seeds'])} | {tokens} | " + " | ".join(
            cell_text(row[f]) if f in row else "–" for f in figures) + " |")
    return lines + [""]
