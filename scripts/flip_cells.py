"""The flip experiment's cells at equal pass rates: breadth alone against the distinctiveness
term (selftrain/report/flip_cells.py says how the common rate is made and how to read it).

    .venv/bin/python scripts/flip_cells.py runs/flip --round 3 [--first 0] [--rate 0.3]

Prints a markdown table: per arm, its cell (breadth, term, threshold, objective), `pass@1`,
the policy's diversity over all samples and over passing ones at its own threshold (from
metrics.json), and the passing figures recomputed at the common pass rate p (`@p`), each as
round `first` -> round `round` (mean over seeds) with the change's seed SD.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from selftrain.config import load_config
from selftrain.judges import build_judge
from selftrain.metrics.policy import policy_diversity
from selftrain.report.flip_cells import (
    MATCHED,
    OWN,
    CellRun,
    at_pass_rate,
    cell_label,
    cell_table,
    common_rate,
)
from selftrain.tasks import make_task


def read_runs(experiment: Path, rounds: list[int]) -> list[CellRun]:
    """Every run folder <experiment>/<arm>/seed<s> with metrics.json in all `rounds`."""
    runs = []
    for run in sorted(experiment.glob("*/seed*")):
        if not all((run / f"round_{k}" / "metrics.json").is_file() for k in rounds):
            continue
        cfg = load_config(run / "config.yaml")
        cell = cell_label(cfg.task.args, cfg.train.objective, cfg.arm.selection)
        figures = {}
        for k in rounds:
            metrics = json.loads((run / f"round_{k}" / "metrics.json").read_text())
            figures[k] = {key: metrics.get(key) for key in OWN}
        runs.append(CellRun(run.parent.name, int(run.name[4:]), cell, figures))
    return runs


def add_matched(experiment: Path, runs: list[CellRun], rounds: list[int], rate: float) -> None:
    """Each run's MATCHED figures at the common rate, with the run's judge and tokenizer."""
    for r in runs:
        run = experiment / r.arm / f"seed{r.seed}"
        cfg = load_config(run / "config.yaml")
        judge = build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args,
                            make_task(cfg.task.name, **cfg.task.args))
        tok = AutoTokenizer.from_pretrained(run / f"round_{rounds[-1]}" / "checkpoint")

        def token_ids(texts: list[str], tok=tok) -> list[list[int]]:
            return tok(texts, add_special_tokens=False)["input_ids"]

        for k in rounds:
            evals = at_pass_rate(pd.read_parquet(run / f"round_{k}" / "eval.parquet"), rate,
                                 seed=r.seed)
            got = policy_diversity(evals, judge=judge, token_ids=token_ids, enabled={
                "eval_distinct_n", "eval_classes_passing", "effective_div"})
            r.figures[k].update({f"{key}@p": got.get(key) for key in MATCHED})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--rate", type=float, help="the common pass rate (default: the lowest)")
    args = ap.parse_args()
    rounds = [args.first, args.round]
    runs = read_runs(args.experiment, rounds)
    if not runs:
        raise SystemExit(f"no run under {args.experiment} has rounds {rounds}")
    rate = args.rate if args.rate is not None else common_rate(runs, rounds)
    add_matched(args.experiment, runs, rounds, rate)
    print("\n".join(cell_table(runs, args.first, args.round, rate)))


if __name__ == "__main__":
    main()
