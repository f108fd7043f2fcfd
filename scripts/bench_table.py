"""The markdown table of several `make bench` runs (each a benchmark.json): every run's ratios,
their median and spread, and each stage's fixed seconds and per-item milliseconds, loop and raw.

    .venv/bin/python scripts/bench_table.py run1/benchmark.json run2/benchmark.json ...
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

RATIOS = ("generate_vs_raw", "finetune_vs_raw", "evaluate_vs_raw", "round_overhead_share",
          "generate_slope_vs_raw", "finetune_slope_vs_raw", "policy_diversity_share",
          "policy_diversity_compute_share", "dpo_finetune_vs_raw",
          "lora_dpo_state_vs_sft", "run_overhead_s", "finished_resume_s")
STAGES = ("generate", "filter", "evaluate", "finetune", "metrics")


def table(runs: list[dict]) -> list[str]:
    """Ratios by run with median and max distance from it; then the stage fits."""
    head = [f"run {i + 1}" for i in range(len(runs))]
    out = [f"commits {', '.join(sorted({r['commit'] for r in runs}))}; "
           f"dates {', '.join(r['date'] for r in runs)}", "",
           "| ratio | " + " | ".join(head) + " | median | largest distance from the median |",
           "| --- |" + " ---: |" * (len(runs) + 2)]
    for key in RATIOS:
        values = [r["ratios"].get(key, r.get(key)) for r in runs]
        if any(v is None for v in values):
            continue
        med = statistics.median(values)
        out.append(f"| `{key}` | " + " | ".join(f"{v:.2f}" for v in values)
                   + f" | **{med:.2f}** | {max(abs(v - med) for v in values):.2f} |")
    out += ["", "| stage | loop fixed s | loop ms per item | raw fixed s | raw ms per item |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for stage in STAGES:
        fits = [r["fits"][stage] for r in runs if stage in r.get("fits", {})]
        if not fits:
            continue
        out.append(f"| {stage} ({fits[0]['items']}) | {_med(fits, 'loop', 'fixed_seconds')} | "
                   f"{_med(fits, 'loop', 'per_item_seconds', 1000)} | "
                   f"{_med(fits, 'raw', 'fixed_seconds')} | "
                   f"{_med(fits, 'raw', 'per_item_seconds', 1000)} |")
    return out


def _med(fits: list[dict], side: str, part: str, scale: float = 1.0) -> str:
    vals = [f[side][part] * scale for f in fits if side in f]
    return f"{statistics.median(vals):.3f}" if vals else ""


if __name__ == "__main__":
    print("\n".join(table([json.loads(Path(p).read_text()) for p in sys.argv[1:]])))
