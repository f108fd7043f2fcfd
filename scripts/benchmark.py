"""The loop against the limits of its compute, in one run (`make bench`).

On the demo's countdown task and tiny model, one rs arm runs round 0 and round 1 through the
real loop (Ray actor groups, the run's training ranks, parquet, metrics). Then, in this
process and on the same data, the same work runs without the loop:

- generation: round 1's pool prompts through a plain `model.generate` (transformers, outside
  the project's backend) at the same batch, length and sampling settings, and through vLLM's
  offline engine when `.venv-vllm` exists (a subprocess in that venv);
- finetuning: round 0's train.parquet through the plain in-process SFT loop, from the same
  base model with the same settings;
- the round: round 1's wall time against the sum of its compute (raw generation of pool and
  test prompts, raw SFT, and the metrics stage's own time), so the rest is the loop's overhead;
- memory: peak RSS (VmHWM) of the driver, a rollout worker and a training rank;
- scaling: round 1's wall time at four pool sizes, and how far each is from a straight line;
- the policy's diversity figures (selftrain/metrics/policy.py) on round 1's eval.parquet, with
  an empty embedding cache (an upper bound: in the loop, texts the training set shares are
  already embedded), as a share of round 1's wall time (goal: at most 10%).

Writes runs/bench/benchmark.json (stable keys: `ratios.generate_vs_raw`,
`ratios.finetune_vs_raw`, `ratios.round_overhead_share`, `ratios.policy_diversity_share`,
`scaling`) and prints a table.

    .venv/bin/python scripts/benchmark.py [--sizes 60,120,240,480] [--out runs/bench]
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

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "countdown_compare.yaml"


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_rs(out: Path, per_level: int, tag: str, levels: str = "2, 3, 4",
           model: str | None = None, task_seed: int = 0) -> dict[str, Any]:
    """Round 0 and round 1 of an rs arm through the loop; stage records and worker memory."""
    from selftrain.config import load_config
    from selftrain.loop.driver import run_rounds
    from selftrain.loop.run import open_run

    cfg = load_config(CONFIG, [
        "rounds=1", "arms={}", "arm.name=rs", "tracking.enabled=false", f"run_root={out}",
        f"experiment=bench-{tag}", "ray.num_cpus=4",
        f"model.cache_dir={REPO / '.cache/selftrain/models'}",
        f"task.args={{seed: {task_seed}, levels: [{levels}], train_per_level: {per_level}, "
        f"test_per_level: 25}}"] + ([f"model.path={model}"] if model else []))
    with open_run(cfg, "rs", overwrite=True) as run:
        run_rounds(run)
        memory = {"rollout_worker": peak_rss_mib(run.rollout.call_all("info")[0]["pid"]),
                  "training_rank": peak_rss_mib(run.trainer.info()[0]["pid"])}
        stages = run.folder.manifest["rounds"]["1"]
        base, folder = run.base, run.folder.path
    start = min(e["started"] for e in stages.values())
    end = max(e["started"] + e["seconds"] for e in stages.values())
    return {"cfg": cfg, "base": base, "folder": folder, "stages": stages, "memory": memory,
            "round_seconds": end - start}


def raw_generate(base: str, prompts: list[str], cfg) -> tuple[int, float]:
    """(tokens, seconds) of plain `model.generate` over the prompts, chunked as the loop does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    K, per_chunk = cfg.rollout.num_samples, max(1, cfg.rollout.batch_size // cfg.rollout.num_samples)
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), per_chunk):
            enc = tok(prompts[i : i + per_chunk], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            torch.manual_seed(i)
            out = model.generate(**enc, do_sample=True, temperature=cfg.rollout.temperature,
                                 top_p=cfg.rollout.top_p, top_k=None, num_return_sequences=K,
                                 max_new_tokens=cfg.rollout.max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            tokens += int((new != tok.pad_token_id).sum())  # through EOS, as the loop counts
    return tokens, time.perf_counter() - start


def raw_finetune(base: str, train_path: Path, cfg) -> float:
    """Seconds of the plain in-process SFT loop on the round's training set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selftrain.cluster.trainer import examples_from_rows, finetune_job
    from selftrain.train.sft import train_sft

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base)
    job = finetune_job(cfg.train, init_path=base, train_path=train_path, out_path="-",
                       seed=cfg.seed + 1)
    rows = pd.read_parquet(train_path).to_dict("records")
    start = time.perf_counter()
    train_sft(model, tok, examples_from_rows(rows), job.settings, torch.device("cpu"))
    return time.perf_counter() - start


def vllm_generate(base: str, prompts: list[str], cfg) -> dict[str, Any] | None:
    """Tokens/s of vLLM's offline engine on the same prompts, when .venv-vllm exists."""
    python = REPO / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        return None
    script = f"""
import json, sys, time
from vllm import LLM, SamplingParams
prompts = json.load(sys.stdin)
llm = LLM({base!r}, dtype="float32", enforce_eager=True, seed=0)
params = SamplingParams(n={cfg.rollout.num_samples}, temperature={cfg.rollout.temperature},
                        max_tokens={cfg.rollout.max_new_tokens})
start = time.perf_counter()
outs = llm.generate(prompts, params, use_tqdm=False)
dt = time.perf_counter() - start
print(json.dumps({{"tokens": sum(len(c.token_ids) for o in outs for c in o.outputs),
                   "seconds": dt}}))
"""
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    done = subprocess.run([str(python), "-c", script], input=json.dumps(prompts), env=env,
                          capture_output=True, text=True, timeout=1200)
    found = [line for line in done.stdout.splitlines() if line.startswith('{"tokens"')]
    if done.returncode != 0 or not found:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(found[-1])


def measure(out: Path, per_level: int) -> dict[str, Any]:
    """Loop against raw compute at the demo's pool size."""
    run = run_rs(out, per_level, "demo")
    cfg, base, folder, stages = run["cfg"], run["base"], run["folder"], run["stages"]
    samples = pd.read_parquet(folder / "round_1" / "samples.parquet")
    pool = list(dict.fromkeys(samples["prompt"]))
    evals = pd.read_parquet(folder / "round_1" / "eval.parquet")
    from selftrain.tasks import build_task

    test = [q.prompt for q in build_task(cfg.task.name, cfg.task.path, cfg.task.args).queries("test")]
    torch.set_num_threads(1)  # the one CPU a rollout worker and a training rank get
    raw_tokens, raw_gen_s = raw_generate(base, pool, cfg)
    _, raw_eval_s = raw_generate(base, test, cfg)
    raw_sft_s = raw_finetune(base, folder / "round_0" / "train.parquet", cfg)
    loop_tps = int(samples["num_tokens"].sum()) / stages["generate"]["seconds"]
    compute = raw_gen_s + raw_eval_s + raw_sft_s + stages["metrics"]["seconds"]
    return {
        "generate": {"loop_tok_per_s": loop_tps, "raw_tok_per_s": raw_tokens / raw_gen_s,
                     "vllm": vllm_generate(base, pool, cfg)},
        "finetune": {"loop_seconds": stages["finetune"]["seconds"], "raw_seconds": raw_sft_s,
                     "rows": len(pd.read_parquet(folder / "round_0" / "train.parquet"))},
        "round": {"wall_seconds": run["round_seconds"], "compute_seconds": compute,
                  "stages": {s: e["seconds"] for s, e in stages.items()},
                  "eval_rows": len(evals),
                  "policy_diversity_seconds": policy_diversity_seconds(folder, cfg)},
        "peak_rss_mib": run["memory"] | {"driver": peak_rss_mib(os.getpid())},
        "base_model": base,
    }


def policy_diversity_seconds(folder: Path, cfg) -> float:
    """Seconds of the policy's diversity figures on round 1's test samples, MiniLM loaded but
    no text embedded yet, with the run's judge and the policy's tokenizer."""
    from transformers import AutoTokenizer

    from selftrain.judges import build_judge
    from selftrain.metrics import embed
    from selftrain.metrics.policy import policy_diversity
    from selftrain.tasks import make_task

    evals = pd.read_parquet(folder / "round_1" / "eval.parquet")
    tokenizer = AutoTokenizer.from_pretrained(folder / "round_1" / "checkpoint")
    judge = build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args,
                        make_task(cfg.task.name, **cfg.task.args))
    embed.Embedder().encode(["load the model"])
    embed._cache.clear()
    start = time.perf_counter()
    policy_diversity(evals, judge=judge, token_ids=lambda texts: tokenizer(
        texts, add_special_tokens=False)["input_ids"])
    return time.perf_counter() - start


def scaling(out: Path, sizes: list[int], model: str) -> dict[str, Any]:
    """Round 1's wall time per pool size (queries per level), and the worst relative distance
    of a point from the least-squares line through them. Levels 3 and 4 only: level 2 has
    ~116 distinct queries in all, too few for the larger pools. The demo run's base model is
    the policy of every size (one build), on the queries of task seed 1, which it never saw:
    with seed 0 the larger pools would hold its demonstration queries, and the training sets
    (and finetune times) would not grow with the pool."""
    seconds = {n: run_rs(out, n, f"scale{n}", "3, 4", model, task_seed=1)["round_seconds"]
               for n in sizes}
    x, y = np.array(sizes, float), np.array([seconds[n] for n in sizes])
    slope, intercept = np.polyfit(x, y, 1)
    worst = float(np.max(np.abs(y - (slope * x + intercept)) / y))
    return {"seconds": {str(n): round(seconds[n], 2) for n in sizes},
            "fit": {"seconds_per_query_per_level": slope, "intercept_seconds": intercept},
            "max_relative_deviation": worst}


def report(result: dict[str, Any]) -> Table:
    r = result["ratios"]
    table = Table(title=f"selftrain benchmark ({result['date']})", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [("generate: loop / raw model.generate (tokens/s)", f"{r['generate_vs_raw']:.2f}"),
            ("finetune: raw SFT loop / loop's stage (seconds)", f"{r['finetune_vs_raw']:.2f}"),
            ("rs round: overhead share of wall time", f"{r['round_overhead_share']:.2f}"),
            ("rs round: policy diversity figures' share of wall time",
             f"{r['policy_diversity_share']:.2f}"),
            ("scaling: worst distance from a line", f"{result['scaling']['max_relative_deviation']:.2f}")]
    rows += [(f"peak RSS {k} (MiB)", f"{v:.0f}") for k, v in result["peak_rss_mib"].items()]
    for name, value in rows:
        table.add_row(name, value)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-level", type=int, default=60, help="pool queries per level (demo: 60)")
    ap.add_argument("--sizes", default="60,120,240,480", help="pool sizes for the scaling run")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    m = measure(out, args.per_level)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs",
        "ratios": {
            "generate_vs_raw": m["generate"]["loop_tok_per_s"] / m["generate"]["raw_tok_per_s"],
            "finetune_vs_raw": m["finetune"]["raw_seconds"] / m["finetune"]["loop_seconds"],
            "round_overhead_share": 1 - m["round"]["compute_seconds"] / m["round"]["wall_seconds"],
            "policy_diversity_share": (m["round"]["policy_diversity_seconds"]
                                       / m["round"]["wall_seconds"]),
        },
        **m,
        "scaling": scaling(out, [int(s) for s in args.sizes.split(",")], m["base_model"]),
    }
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    Console().print(report(result))
    print(f"written {out / 'benchmark.json'}")


if __name__ == "__main__":
    sys.exit(main())
