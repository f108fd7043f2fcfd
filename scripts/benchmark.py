"""The loop against the limits of its compute, like for like, repeated (`make bench`).

On the demo's countdown task and tiny model, an rs arm runs round 0 and round 1 through the
real loop (Ray actor groups, the run's training ranks, parquet, metrics) at two or more pool
sizes. Right after each loop run, in this process, the same work runs without the loop
(scripts/bench_raw.py): round 1's generation and evaluation with the weights file the rollout
worker held (round 1's policy), round 1's finetune from the init its stage recorded, with the
same prompts, chunks, seeds, sampling settings and one torch thread. `benchmark.json` records
the weights file of each side with its sha256.

Every (size, repetition) is one loop run and its raw twin, interleaved (the size order flips
each repetition). Figures:

- `ratios.generate_vs_raw` (raw seconds / loop seconds for the same samples; the raw side
  reproduces the loop's texts, `identical_share`), `ratios.finetune_vs_raw`,
  `ratios.round_overhead_share` (share of round 1's wall time not spent in the raw compute):
  medians at the demo size; `spreads` keeps every repetition with min / median / max;
- `fits`: per stage, seconds = fixed + per_item x items by least squares over every run, for
  the loop (less the once-per-run `warm_wait`) and the raw side; `ratios.generate_slope_vs_raw`, `ratios.finetune_slope_vs_raw`
  (raw per-item seconds / loop per-item seconds) and `fixed_seconds` per stage;
- `parts`: where a stage's seconds went at the demo size (`time/<stage>/<part>`: weight_load,
  compute, dispatch_gather, write), from the stage's own timer, the workers' chunk clocks and
  the training rank's parts;
- `scaling`: round 1's wall time per size and the worst distance from a line; peak RSS;
- `ratios.policy_diversity_share`: the seconds round 1's metrics stage spent on the policy's
  diversity figures (selftrain/metrics/policy.py; the stage's `policy_diversity` part, with the
  embedding cache and torch threads the loop had: each loop run starts with an empty cache, as
  a run's driver does, and `embed_precision` is the MiniLM arithmetic it used), as a share of
  round 1's wall time (goal: <= 0.10). With `metrics.prefetch_embeddings` (off by default) the evaluate stage embeds each
  chunk's test samples in a background thread while the worker generates the next
  (selftrain/metrics/embed.py `prefetch`), which takes MiniLM's work off this path:
  `ratios.evaluate_vs_raw` shows whether that slows evaluate, and
  `ratios.policy_diversity_compute_share` adds the prefetch thread's seconds back (the cost
  where no core is idle); `ratios.policy_diversity_cold_share`: the figures recomputed here on
  round 1's eval.parquet with an empty embedding cache and one torch thread (an upper bound).
- `ratios.dpo_finetune_vs_raw`, `ratios.lora_dpo_state_vs_sft` and `dpo`: a dpo arm's round-1
  finetune against a plain DPO loop, and LoRA-DPO's per-rank state against LoRA-SFT's
  (scripts/bench_dpo.py; at the demo size, not in --quick).

    .venv/bin/python scripts/benchmark.py [--sizes 20,40,60] [--reps 3] [--quick] [--out runs/bench]

`--quick` (or SELFTRAIN_BENCH_QUICK=1): sizes 4,8 and 2 repetitions, for the test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from bench_dpo import dpo_bench
from bench_loop import loop_run, peak_rss_mib, stage_parts
from bench_raw import identical_share, raw_finetune, raw_generate, vllm_generate, weights_file
from bench_stats import fixed_and_per_item, max_relative_deviation, ratio_of_slopes, spread
from rich.console import Console
from rich.table import Table

from selftrain.device import single_cpu_thread
from selftrain.heap import heap_info
from selftrain.metrics import embed

REPO = Path(__file__).resolve().parent.parent
STAGES = ("generate", "filter", "evaluate", "finetune", "metrics")


def raw_twin(loop: dict[str, Any]) -> dict[str, Any]:
    """The raw computation of the loop run's round 1, on the very weights its stages used."""
    cfg, folder = loop["cfg"], loop["folder"]
    with single_cpu_thread():  # the one CPU a rollout worker and a training rank get
        return _raw_twin(loop, cfg, folder)


def _raw_twin(loop: dict[str, Any], cfg, folder: Path) -> dict[str, Any]:
    gen = raw_generate(loop["policy"], loop["pool_prompts"], loop["gen_params"],
                       cfg.rollout.batch_size, loop["gen_seeds"])
    ev = raw_generate(loop["policy"], loop["test_prompts"], loop["eval_params"],
                      cfg.rollout.batch_size, loop["eval_seeds"])
    sft = raw_finetune(loop["init"], folder / "round_0" / "train.parquet", cfg.train,
                       cfg.seed + 1)
    samples = pd.read_parquet(folder / "round_1" / "samples.parquet")
    evals = pd.read_parquet(folder / "round_1" / "eval.parquet")
    return {
        "generate_seconds": gen["seconds"], "generate_tokens": gen["tokens"],
        "evaluate_seconds": ev["seconds"], "finetune_seconds": sft["seconds"],
        "finetune_cpu_seconds": sft["cpu_seconds"],
        "identical_share": {"generate": identical_share(list(samples["completion"]), gen["texts"]),
                            "evaluate": identical_share(list(evals["completion"]), ev["texts"])},
        "weights": {"generate": weights_file(loop["policy"]),
                    "finetune": weights_file(loop["init"])},
        "torch_threads": torch.get_num_threads(),
        "malloc": heap_info()["malloc"],  # the driver's process: tuned as the loop's workers are
    }


def one_run(out: Path, size: int, rep: int) -> dict[str, Any]:
    driver_threads = torch.get_num_threads()  # the loop's driver (metrics) runs with these
    embed._cache.clear()  # a run's driver starts with no text embedded (an earlier rep's are not its)
    loop = loop_run(out, size, f"n{size}")
    loop["torch_threads"] = {**loop["torch_threads"], "driver": driver_threads}
    raw = raw_twin(loop)
    st, parts = loop["stages"], stage_parts(loop)
    compute = (raw["generate_seconds"] + raw["evaluate_seconds"] + raw["finetune_seconds"]
               + st["metrics"]["seconds"])
    return {
        "size": size, "rep": rep, "items": loop["items"],
        "embed_precision": st["metrics"]["embed_precision"],
        "loop": {"stages": {s: e["seconds"] for s, e in st.items()},
                 "round_seconds": loop["round_seconds"], "parts": parts,
                 "generate_tokens": loop["generate_tokens"], "weights": loop["weights"],
                 "torch_threads": loop["torch_threads"], "peak_rss_mib": loop["memory"],
                 "frozen_objects": loop["frozen_objects"], "malloc": loop["malloc"],
                 # the rank's CPU in its finetune: below the stage's seconds, it waited
                 "finetune_cpu_seconds": st["finetune"]["workers"][0]["cpu_seconds"]},
        "raw": raw,
        "ratios": {"generate_vs_raw": raw["generate_seconds"] / st["generate"]["seconds"],
                   "finetune_vs_raw": raw["finetune_seconds"] / st["finetune"]["seconds"],
                   "evaluate_vs_raw": raw["evaluate_seconds"] / st["evaluate"]["seconds"],
                   "round_overhead_share": 1 - compute / loop["round_seconds"],
                   "policy_diversity_share": (parts.get("time/metrics/policy_diversity", 0.0)
                                              / loop["round_seconds"]),
                   "policy_diversity_compute_share": (
                       (parts.get("time/metrics/policy_diversity", 0.0)
                        + st["metrics"].get("embed_prefetch_s", 0.0)) / loop["round_seconds"]),
                   "policy_diversity_cold_share": (policy_diversity_seconds(loop["folder"],
                                                                            loop["cfg"])
                                                   / loop["round_seconds"])},
    }


def policy_diversity_seconds(folder: Path, cfg) -> float:
    """Seconds of the policy's diversity figures on round 1's test samples, MiniLM loaded but
    no text embedded yet, with the run's judge and the policy's tokenizer."""
    from transformers import AutoTokenizer

    from selftrain.judges import build_judge
    from selftrain.loop.round_metrics import metrics_embedder
    from selftrain.metrics.policy import policy_diversity
    from selftrain.tasks import build_task

    evals = pd.read_parquet(folder / "round_1" / "eval.parquet")
    tokenizer = AutoTokenizer.from_pretrained(folder / "round_1" / "checkpoint")
    judge = build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args,
                        build_task(cfg.task.name, cfg.task.path, cfg.task.args))
    embedder = metrics_embedder(cfg)  # the loop's precision
    embedder.encode(["load the model"])
    embed._cache.clear()
    with single_cpu_thread():
        start = time.perf_counter()
        policy_diversity(evals, judge=judge, embedder=embedder, token_ids=lambda texts: tokenizer(
            texts, add_special_tokens=False)["input_ids"])
        return time.perf_counter() - start


def per_round_seconds(run: dict[str, Any], stage: str) -> float:
    """The stage's seconds less what only round 1 of a run pays: the finetune's wait for the
    training ranks' start-up load (`warm_wait`), which is there only when round 0 was shorter
    than that load (small pools), and would read as a fixed cost of every finetune."""
    return run["loop"]["stages"][stage] - run["loop"]["parts"].get(f"time/{stage}/warm_wait", 0.0)


def fits(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Fixed and per-item seconds of every stage (per round: `per_round_seconds`), loop side
    and (generate, evaluate, finetune) raw side, over all runs."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        items = [r["items"][stage] for r in runs]
        loop = fixed_and_per_item(items, [per_round_seconds(r, stage) for r in runs])
        out[stage] = {"items": stage_items(stage), "loop": loop}
        if stage in ("generate", "evaluate", "finetune"):
            out[stage]["raw"] = fixed_and_per_item(items, [r["raw"][f"{stage}_seconds"]
                                                           for r in runs])
    return out


def stage_items(stage: str) -> str:
    return {"generate": "samples", "evaluate": "eval rows", "finetune": "training rows",
            "filter": "samples", "metrics": "samples + eval rows"}[stage]


def summarize(runs: list[dict[str, Any]], headline: int) -> dict[str, Any]:
    at = [r for r in runs if r["size"] == headline]
    spreads = {k: spread([r["ratios"][k] for r in at]) for k in at[0]["ratios"]}
    f = fits(runs)
    parts_keys = sorted({k for r in at for k in r["loop"]["parts"]})
    return {
        "ratios": {k: v["median"] for k, v in spreads.items()} | {
            "generate_slope_vs_raw": ratio_of_slopes(f["generate"]["raw"], f["generate"]["loop"]),
            "finetune_slope_vs_raw": ratio_of_slopes(f["finetune"]["raw"], f["finetune"]["loop"]),
            "fixed_seconds": {s: f[s]["loop"]["fixed_seconds"] for s in STAGES}},
        "spreads": spreads,
        "fits": f,
        "parts": {k: spread([r["loop"]["parts"].get(k, 0.0) for r in at]) for k in parts_keys},
        "weights": at[0]["loop"]["weights"] | {"raw": at[0]["raw"]["weights"]},
        "identical_share": at[0]["raw"]["identical_share"],
        "embed_precision": at[0]["embed_precision"],
        "scaling": scaling(runs),
        "peak_rss_mib": at[0]["loop"]["peak_rss_mib"] | {"driver": peak_rss_mib(os.getpid())},
    }


def scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = sorted({r["size"] for r in runs})
    secs = {n: spread([r["loop"]["round_seconds"] for r in runs if r["size"] == n])["median"]
            for n in sizes}
    return {"round_seconds": {str(n): round(s, 3) for n, s in secs.items()},
            "max_relative_deviation": max_relative_deviation(sizes, [secs[n] for n in sizes])}


def report(result: dict[str, Any]) -> Table:
    table = Table(title=f"selftrain benchmark ({result['date']}, {result['commit']}, "
                  f"median of {result['reps']} at {result['headline_size']}/level)",
                  title_justify="left")
    for col, justify in (("figure", "left"), ("median", "right"), ("min", "right"),
                         ("max", "right")):
        table.add_column(col, justify=justify)
    for key, s in result["spreads"].items():
        table.add_row(key, f"{s['median']:.2f}", f"{s['min']:.2f}", f"{s['max']:.2f}")
    r = result["ratios"]
    for key in ("generate_slope_vs_raw", "finetune_slope_vs_raw", "dpo_finetune_vs_raw",
                "lora_dpo_state_vs_sft"):
        if key in r:  # the dpo ratios: not in --quick
            table.add_row(key, f"{r[key]:.2f}", "", "")
    for stage, f in result["fits"].items():
        table.add_row(f"{stage}: fixed s / per-item ms ({f['items']})",
                      f"{f['loop']['fixed_seconds']:.2f} / {1e3 * f['loop']['per_item_seconds']:.2f}",
                      "", "")
    for key, s in result["parts"].items():
        table.add_row(key, f"{s['median']:.3f}", f"{s['min']:.3f}", f"{s['max']:.3f}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,40,60", help="pool queries per level; the last is "
                    "the demo size the ratios are read at")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get(
        "SELFTRAIN_BENCH_QUICK")), help="sizes 4,8, 2 repetitions (the test)")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    sizes = [4, 8] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps = 2 if args.quick else args.reps
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for rep in range(reps):  # loop and raw interleaved; the size order flips every repetition
        for size in sizes if rep % 2 == 0 else sizes[::-1]:
            runs.append(one_run(out, size, rep))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dpo = None if args.quick else dpo_bench(out, sizes[-1], reps)  # scripts/bench_dpo.py
    vllm = None
    if (REPO / ".venv-vllm").exists() and not args.quick:  # vLLM on the same weights, once
        last = loop_run(out, sizes[-1], f"n{sizes[-1]}")
        vllm = vllm_generate(last["policy"], last["pool_prompts"], last["gen_params"])
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit, "vllm": vllm,
              "machine": f"{os.cpu_count()} CPUs", "reps": reps, "sizes": sizes,
              "headline_size": sizes[-1], **summarize(runs, sizes[-1]), "runs": runs}
    if dpo is not None:
        result["ratios"] |= dpo.pop("ratios")
        result["dpo"] = dpo
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    Console().print(report(result))
    print(f"written {out / 'benchmark.json'}")


if __name__ == "__main__":
    sys.exit(main())
