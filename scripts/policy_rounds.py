"""The policy's own diversity, round 0 against a later round, per arm of an experiment folder:
over all test samples and over passing ones (the Shypula et al. 2025 comparison), each with a
95% interval from a bootstrap over test queries (paired: both rounds answer the same queries).

    .venv/bin/python scripts/policy_rounds.py runs/countdown_compare --round 3 [--seed 0]

Prints a markdown table (arm, figure, round 0, round k, difference [interval]). The per-query
figures are `selftrain.metrics.policy.policy_diversity` on each query's rows of eval.parquet,
with the run's judge and the round's tokenizer; a passing figure is averaged over the queries
with at least 2 passing samples, as in metrics.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from selftrain.config import load_config
from selftrain.judges import build_judge
from selftrain.metrics.policy import policy_diversity
from selftrain.tasks import make_task

KEYS = ["pass@1", "eval_distinct_n", "eval_distinct_n_passing", "eval_embed_div",
        "eval_embed_div_passing", "eval_classes", "eval_classes_passing", "effective_div",
        "passing_pair_div"]


class TokenIds:
    """The policy tokenizer's token ids of texts, as the round's metrics count them."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


def per_query(run: Path, k: int, judge, token_ids) -> pd.DataFrame:
    """One row per test query of round k: its policy figures and pass@1."""
    evals = pd.read_parquet(run / f"round_{k}" / "eval.parquet")
    rows = {}
    for q, group in evals.groupby("query_id", sort=True):
        rows[q] = {**policy_diversity(group, judge=judge, token_ids=token_ids),
                   "pass@1": group["correct"].mean()}
    return pd.DataFrame(rows).T.astype(float)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    k = args.round
    print(f"| arm | figure | round 0 | round {k} | round {k} − round 0 [95%] |")
    print("|---|---|---:|---:|---:|")
    for arm_dir in sorted(p for p in args.experiment.iterdir() if (p / f"seed{args.seed}").is_dir()):
        run = arm_dir / f"seed{args.seed}"
        cfg = load_config(run / "config.yaml")
        judge = build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args,
                            make_task(cfg.task.name, **cfg.task.args))
        tok = AutoTokenizer.from_pretrained(run / f"round_{args.round}" / "checkpoint")
        token_ids = TokenIds(tok)
        first, last = (per_query(run, k, judge, token_ids) for k in (0, args.round))
        draws = rng.integers(0, len(first), size=(args.resamples, len(first)))
        for key in KEYS:
            a, b = first[key].to_numpy(), last[key].to_numpy()
            diffs = [np.nanmean(b[d]) - np.nanmean(a[d]) for d in draws]
            lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
            m0, m1 = np.nanmean(a), np.nanmean(b)
            print(f"| {arm_dir.name} | `{key}` | {m0:.3f} | {m1:.3f} | {m1 - m0:+.3f} "
                  f"[{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main()
