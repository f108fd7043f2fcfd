"""The DPO side of the benchmark (`make bench`): a dpo arm's round-1 finetune against a plain
DPO loop, and the per-rank state of LoRA-DPO against LoRA-SFT.

Like for like, as scripts/bench_raw.py does for SFT: the loop run (the demo's countdown task
and tiny model, `train.objective: dpo` with the `train.dpo` of configs/countdown_prefs.yaml)
learns in round 1 from round 0's pairs.parquet, from the init its finetune recorded. Right
after it, in this process with one torch thread, the raw side loads that init file and those
pairs and runs DPO written out plainly: the reference log-probs of every pair in one pass,
then the sigmoid loss steps with AdamW, with the same beta, NLL weight, epochs, batches
(chosen rows then rejected rows in one forward), shuffling seed, learning-rate schedule and
gradient clipping. Both files are recorded with their sha256, and the raw side's last-epoch
loss and final weights are compared with the loop's (`loss_abs_diff`, `max_weight_diff`), so
the seconds compare the same work. Repetitions interleave loop and raw.

- `ratios.dpo_finetune_vs_raw`: raw seconds / the loop's finetune stage seconds, median;
- `ratios.lora_dpo_state_vs_sft`: one rank's parameter + gradient + optimizer-state bytes
  (+ the cached reference log-probs, for DPO) under LoRA, DPO over SFT, on the same init and
  texts (SFT learns the pairs' chosen sides). Under LoRA the reference is the same model with
  its adapters off, so the ratio stays near 1; a second copy of the model would make it ~2.

    .venv/bin/python scripts/bench_dpo.py [--size 60] [--reps 3] [--quick] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from bench_loop import demo_base_model
from bench_raw import weights_file
from bench_stats import spread

from selftrain.device import single_cpu_thread

REPO = Path(__file__).resolve().parent.parent
PREFS = REPO / "configs" / "countdown_prefs.yaml"


def file_sha(path: Path) -> dict[str, str]:
    import hashlib

    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def dpo_config(out: Path, per_level: int, tag: str):
    """countdown_prefs.yaml's dpo arm (the demo's task, model and train settings, its
    train.dpo) for round 0 and round 1 at `per_level` pool queries per level."""
    from selftrain.config import load_config

    test = max(2, round(per_level * 25 / 60))
    return load_config(PREFS, [
        "rounds=1", "arms={}", "seeds=[0]", "arm.name=rs", "train.objective=dpo",
        "tracking.enabled=false", f"run_root={out}", f"experiment=bench-dpo-{tag}",
        "ray.num_cpus=4", f"model.path={demo_base_model()}",
        f"task.args={{seed: 0, levels: [2, 3, 4], train_per_level: {per_level}, "
        f"test_per_level: {test}}}"])


def loop_dpo(out: Path, per_level: int, tag: str) -> dict[str, Any]:
    """Round 0 and round 1 of the dpo arm through the loop; what round 1's finetune read and
    recorded."""
    from selftrain.loop.driver import run_rounds
    from selftrain.loop.run import open_run

    cfg = dpo_config(out, per_level, tag)
    with open_run(cfg, "dpo", overwrite=True) as run:
        run_rounds(run)
        folder = run.folder.path
        stage = run.folder.manifest["rounds"]["1"]["finetune"]
    if "carried_over" in stage:
        raise SystemExit(f"bench_dpo: round 0 at {per_level}/level built no pair; raise --size")
    rank = stage["workers"][0]
    return {"cfg": cfg, "folder": folder, "init": stage["init_path"],
            "pairs": folder / "round_0" / "pairs.parquet",
            "checkpoint": folder / "round_1" / "checkpoint",
            "seconds": stage["seconds"], "parts": stage.get("parts", {}) | rank.get("parts", {}),
            "loss": rank["train/loss"], "steps": rank["steps"]}


def side_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-prob of its learned tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    learned = labels != -100
    picked = logits.log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * learned).sum(-1), learned.sum(-1)


def reference_pass(model, batch, n: int, bs: int) -> torch.Tensor:
    """[n, 4]: chosen sum, chosen tokens, rejected sum, rejected tokens of every pair under
    the model as it is (the init), in batches of `bs` pairs."""
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, n, bs):
            logp, count = side_logps(model, batch(list(range(i, min(n, i + bs)))))
            k = len(logp) // 2
            parts.append(torch.stack([logp[:k], count[:k], logp[k:], count[k:]], -1).double())
    return torch.cat(parts)


def raw_dpo(init: str, pairs_path: Path, train_cfg, seed: int) -> dict[str, Any]:
    """The plain DPO loop from `init` on `pairs_path`: seconds (model loaded, as on a warm
    rank), the last epoch's mean loss, and the final weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

    from selftrain.cluster.trainer import finetune_job
    from selftrain.train.dpo import encode_pairs
    from selftrain.train.sft import collate

    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(init)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    job = finetune_job(train_cfg, init_path=init, train_path=pairs_path, out_path="-", seed=seed)
    s, d = job.settings, job.dpo
    assert d.loss == "sigmoid" and s.max_steps is None, "the raw side writes sigmoid DPO only"
    rows = pd.read_parquet(pairs_path).to_dict("records")
    start = time.perf_counter()
    pairs = encode_pairs(tok, rows, s.max_length)

    def batch(idx: list[int]) -> dict[str, torch.Tensor]:
        return collate([pairs[i].chosen for i in idx] + [pairs[i].rejected for i in idx], pad)

    n, bs = len(pairs), s.batch_size
    ref = reference_pass(model, batch, n, bs)
    steps = -(-n // bs) * s.epochs
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.lr,
                              weight_decay=s.weight_decay)
    sched = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optim, num_warmup_steps=max(1, int(s.warmup_ratio * steps)), num_training_steps=steps,
        min_lr_rate=0.1)
    rng, losses = random.Random(s.seed), []
    model.train()
    for _ in range(s.epochs):
        order = list(range(n))
        rng.shuffle(order)
        losses = []
        for b in range(0, n, bs):
            idx = order[b : b + bs]
            logp, count = side_logps(model, batch(idx))
            k = len(idx)
            chosen, rejected = d.beta * (logp[:k] - ref[idx, 0]), d.beta * (logp[k:] - ref[idx, 2])
            loss = (-F.logsigmoid(chosen - rejected)
                    - d.nll_weight * logp[:k] / count[:k].clamp(min=1)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            losses += [loss.item()] * k
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "loss": sum(losses) / len(losses), "steps": steps,
            "model": model.eval(), "init": weights_file(init), "pairs": file_sha(pairs_path)}


def max_weight_diff(model, checkpoint: Path) -> float:
    """The largest |raw - loop| over the weights: 0 (or float noise) when both did the same."""
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / "model.safetensors"))
    own = model.state_dict()
    return max(float((own[k].float() - v.float()).abs().max()) for k, v in saved.items()
               if k in own)


def one_rep(out: Path, per_level: int, rep: int) -> dict[str, Any]:
    """A loop run and its raw twin, on the very init file and pairs the loop's stage read."""
    loop = loop_dpo(out, per_level, f"n{per_level}")
    with single_cpu_thread():  # the one CPU a training rank gets; the driver's own count after
        raw = raw_dpo(loop["init"], loop["pairs"], loop["cfg"].train, loop["cfg"].seed + 1)
        raw_threads = torch.get_num_threads()
    return {
        "size": per_level, "rep": rep,
        "loop": {"seconds": loop["seconds"], "parts": loop["parts"], "loss": loop["loss"],
                 "steps": loop["steps"], "init": weights_file(loop["init"]),
                 "pairs": file_sha(loop["pairs"])},
        "raw": {"seconds": raw["seconds"], "loss": raw["loss"], "steps": raw["steps"],
                "init": raw["init"], "pairs": raw["pairs"],
                "torch_threads": raw_threads},
        "loss_abs_diff": abs(raw["loss"] - loop["loss"]),
        "max_weight_diff": max_weight_diff(raw["model"], loop["checkpoint"]),
        "ratio": raw["seconds"] / loop["seconds"],
        "folder": str(loop["folder"]),
    }


def lora_state(init: str, pairs_path: Path, tmp: Path, steps: int = 2) -> dict[str, Any]:
    """One rank's state under LoRA (`RankTrainer` in-process, on a one-rank gloo group, as
    scripts/gpu_check.py runs it): SFT on the pairs' chosen sides, then DPO on the pairs, from
    the same init. state = parameters + gradients + optimizer state (+ the reference cache)."""
    import torch.distributed as dist

    from selftrain.config import DPOConfig, LoraConfig, TrainConfig
    from selftrain.runfolder.folder import write_parquet
    from selftrain.runfolder.schemas import TRAIN_SCHEMA
    from selftrain.train.rank_trainer import FinetuneJob, RankTrainer
    from selftrain.train.sft import SFTSettings

    rows = pd.read_parquet(pairs_path).to_dict("records")
    train = tmp / "chosen.parquet"
    write_parquet(train, [{"sample_id": r["chosen_id"], "query_id": r["query_id"],
                           "difficulty": r["difficulty"], "prompt": r["prompt"],
                           "completion": r["chosen"], "origin": r["origin"], "loss_mask": None,
                           "completion_tokens": 0} for r in rows], schema=TRAIN_SCHEMA)
    settings = SFTSettings(max_steps=steps, batch_size=32, lr=1e-3, seed=0)
    out: dict[str, Any] = {}
    dist.init_process_group("gloo", init_method=f"file://{tmp / 'rendezvous'}", rank=0,
                           world_size=1)
    try:
        for objective, data in (("sft", train), ("dpo", pairs_path)):
            cfg = TrainConfig(lora=LoraConfig(), objective=objective)
            stats = RankTrainer(cfg, 0, 1, torch.device("cpu")).finetune(FinetuneJob(
                init, str(data), str(tmp / objective), settings, objective=objective,
                dpo=DPOConfig()))
            out[objective] = {k: stats[k] for k in ("param_mib", "grad_mib", "optim_mib",
                                                    "state_mib")}
            out[objective]["reference_mib"] = stats.get("reference_mib", 0.0)
            out[objective]["trainable_params"] = stats["trainable_params"]
    finally:
        dist.destroy_process_group()
    total = {k: v["state_mib"] + v["reference_mib"] for k, v in out.items()}
    return out | {"ratio": total["dpo"] / total["sft"]}


def dpo_bench(out: Path, per_level: int, reps: int) -> dict[str, Any]:
    """`reps` interleaved loop / raw repetitions at `per_level`, then the LoRA state once."""
    runs = [one_rep(out, per_level, rep) for rep in range(reps)]
    times = spread([r["ratio"] for r in runs])
    last = runs[-1]["loop"]
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        lora = lora_state(str(Path(last["init"]["path"]).parent), Path(last["pairs"]["path"]),
                          Path(tmp))
    return {"ratios": {"dpo_finetune_vs_raw": times["median"],
                       "lora_dpo_state_vs_sft": lora["ratio"]},
            "spreads": {"dpo_finetune_vs_raw": times}, "lora_state": lora,
            "size": per_level, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=60, help="pool queries per level")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="size 8, 2 repetitions (the test)")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = dpo_bench(out, 8 if args.quick else args.size, 2 if args.quick else args.reps)
    (out / "bench_dpo.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"] | {"spread": result["spreads"]}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
