"""What the loop did to each arm's policy: round k against round 0 of the same runs, over all
test samples and over passing ones (the Shypula et al. 2025 comparison), with the comparison's
own statistics: the seed mean of the difference, a 95% paired bootstrap over seeds and then test
queries within each level (both rounds answer the same queries), `mde` for a null result.

    .venv/bin/python scripts/policy_rounds.py runs/flip --round 3 [--arms a,b] [--seeds 0,1,2]

Prints a markdown table (arm, figure, round 0, round k, difference [interval] or (±mde)). The
per-query tables and figure functions are those of `selftrain compare`
(selftrain/report/comparison.py), each checked against the round's metrics.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selftrain.metrics.bootstrap import SeedPair, paired_bootstrap
from selftrain.report.comparison import RoundTables, figures_of

KEYS = ("pass@1", "eval_distinct_n", "eval_distinct_n_passing", "eval_classes",
        "eval_classes_passing", "effective_div", "passing_pair_div", "eval_dominant_format_share")


def arm_rows(rounds: RoundTables, arm: str, seeds: list[int], k: int) -> list[str]:
    have = [s for s in seeds if {0, k} <= rounds.done(arm, s)]
    if not have:
        return []
    pairs = [(rounds.tables(arm, s, k)["test"], rounds.tables(arm, s, 0)["test"]) for s in have]
    rows = []
    for figure, queries, fn in figures_of([t for pair in pairs for t in pair]):
        if figure not in KEYS or queries != "test":
            continue
        d = paired_bootstrap([SeedPair(a, b) for a, b in pairs], fn)
        if d.diff is None:
            continue
        first = sum(fn(b, None) for _, b in pairs) / len(pairs)
        text = f"{d.diff:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"
        if d.verdict == "no difference detected":
            text += f" (±{d.mde:.3f})"
        rows.append(f"| {arm} | `{figure}` | {first:.3f} | {first + d.diff:.3f} | {text} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--arms", default=None, help="comma-separated (default: every arm folder)")
    ap.add_argument("--seeds", default=None, help="comma-separated (default: every seed folder)")
    args = ap.parse_args()
    exp, k = args.experiment, args.round
    arms = (args.arms.split(",") if args.arms else
            sorted(p.name for p in exp.iterdir() if any(p.glob("seed*/round_0"))))
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds else
             sorted({int(p.name[4:]) for a in arms for p in (exp / a).glob("seed*")}))
    rounds = RoundTables(exp, None)
    print(f"| arm | figure | round 0 | round {k} | round {k} − round 0 [95%] (±detectable) |")
    print("|---|---|---:|---:|---:|")
    for arm in arms:
        for row in arm_rows(rounds, arm, seeds, k):
            print(row)


if __name__ == "__main__":
    main()
