"""CUDA smoke test on the tiny model: generation, a bf16 finetune step, critics, then a round's
finetune with FSDP (bf16 mixed precision, activation checkpointing) and with LoRA, each checked
by loading its checkpoint into the generation backend, then a DPO round under each (the
reference a full model under FSDP, the same model with its adapters off under LoRA).

Runs the plain worker classes in-process, exactly as Ray would run them inside actors (the FSDP
and LoRA steps on a one-rank torch process group), so it needs no Ray, vLLM or wandb: torch,
transformers, tokenizers, pandas/pyarrow and peft. Exits non-zero (loudly) when CUDA is not
available or a piece did not run on the GPU.

    python scripts/gpu_check.py          # on a GPU
    python scripts/gpu_check.py --cpu    # the same steps on the CPU, small (what tests run)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch


@dataclass
class Sizes:
    prompts: int
    new_tokens: int
    train_steps: int
    critic_queries: int
    critic_new_tokens: int


GPU = Sizes(prompts=128, new_tokens=64, train_steps=20, critic_queries=32, critic_new_tokens=512)
CPU = Sizes(prompts=8, new_tokens=12, train_steps=2, critic_queries=4, critic_new_tokens=16)


def main(argv: list[str] | None = None) -> int:
    from selftrain.device import require_cuda

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--cpu", action="store_true", help="run every step on the CPU, small")
    cpu = args.parse_args(argv).cpu
    device = torch.device("cpu") if cpu else require_cuda()
    sizes = CPU if cpu else GPU
    name = "CPU" if cpu else torch.cuda.get_device_name(0)
    print(f"device: {name}, torch {torch.__version__}")
    from selftrain.tasks.countdown import CountdownTask

    task = CountdownTask()
    tmp = Path(tempfile.mkdtemp(prefix="selftrain-gpu-check-"))
    model_path = tiny_model(tmp / "model")
    backend = check_generation(model_path, task, sizes, device)
    check_finetune(backend, task, sizes, device)
    check_critics(backend, model_path, task, sizes)
    train = training_set(task, tmp / "train.parquet")
    with one_rank_group(tmp, device):
        check_round(backend, "fsdp", model_path, train, tmp / "fsdp", sizes, device)
        check_round(backend, "lora", model_path, train, tmp / "lora", sizes, device)
        pairs = preference_pairs(train, tmp / "pairs.parquet")
        check_dpo("fsdp", model_path, pairs, tmp / "dpo-fsdp", sizes, device)
        check_dpo("lora", model_path, pairs, tmp / "dpo-lora", sizes, device)
    check_scorer_and_judge(tmp, device)
    check_weight_path(tmp, device, small=cpu)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"OK: generation, bf16 finetune, critics, FSDP and LoRA rounds (SFT and DPO), the "
          f"reward-model scorer and the pair-classifier judge ran on {device.type}")
    return 0


def tiny_model(out: Path) -> Path:
    from selftrain.config import TinyModelConfig
    from selftrain.models.tiny_model import (
        build_char_tokenizer,
        build_tiny_llama,
        portable_tokenizer_config,
    )

    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(), len(tokenizer), tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return out


def check_generation(model_path: Path, task, sizes: Sizes, device: torch.device):
    """1. The generation backend, in bf16 on the GPU."""
    from selftrain.backends import SamplingConfig
    from selftrain.backends.hf import HFBackend
    from selftrain.device import synchronize

    backend = HFBackend(str(model_path), dtype="bfloat16")
    param = next(backend.model.parameters())
    if device.type == "cuda" and param.device.type != "cuda":
        raise SystemExit(f"FAIL: generation backend put the model on {param.device}, not CUDA")
    prompts = [q.prompt for q in task.queries("train")][: sizes.prompts]
    params = SamplingConfig(n=4, temperature=1.0, max_new_tokens=sizes.new_tokens)
    backend.generate(prompts[:8], params, seed=0)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    gens = backend.generate(prompts, params, seed=1)
    synchronize(device)
    dt = time.perf_counter() - t0
    tokens = sum(g.num_tokens for outs in gens for g in outs)
    print(f"generate: {len(prompts) * params.n} sequences, {tokens} tokens, "
          f"{tokens / dt:,.0f} tokens/s")
    return backend


def check_finetune(backend, task, sizes: Sizes, device: torch.device) -> None:
    """2. SFT steps in bf16 autocast on the backend's own model."""
    from selftrain.device import synchronize
    from selftrain.train.sft import SFTExample, SFTSettings, train_sft

    examples = [SFTExample(q.prompt, sol) for q in task.queries("train")
                for sol in task.reference_solutions(q, k=2)]
    net = backend.model.float().train()
    settings = SFTSettings(epochs=1, lr=1e-3, batch_size=64, max_steps=sizes.train_steps)
    synchronize(device)
    t0 = time.perf_counter()
    stats = train_sft(net, backend.tokenizer, examples, settings, device,
                      autocast_dtype=torch.bfloat16)
    synchronize(device)
    dt = time.perf_counter() - t0
    if next(net.parameters()).device.type != device.type or stats["steps"] == 0:
        raise SystemExit(f"FAIL: the finetune step did not run on {device.type}")
    print(f"train: {stats['steps']} steps bf16, {stats['tokens']} tokens, "
          f"{stats['tokens'] / dt:,.0f} tokens/s, loss {stats['loss']:.3f}")


def check_critics(backend, model_path: Path, task, sizes: Sizes) -> None:
    """3. Critics: the exact oracle and the generative lm critic."""
    from critics import CritiqueRequest, build_critic, checked
    from selftrain.backends import SamplingConfig

    queries = task.queries("train")[: sizes.critic_queries]
    texts = backend.generate([q.prompt for q in queries],
                             SamplingConfig(n=1, max_new_tokens=sizes.new_tokens), seed=2)
    requests = [CritiqueRequest(sample_id=str(i), query=q, steps=task.split_steps(t[0].text))
                for i, (q, t) in enumerate(zip(queries, texts))]
    oracle = checked(build_critic("countdown-oracle", None, {}, task), requests)
    lm = build_critic("lm", None, {"model_path": str(model_path),
                                   "max_new_tokens": sizes.critic_new_tokens}, task)
    t0 = time.perf_counter()
    crits = checked(lm, requests)
    dt = time.perf_counter() - t0
    print(f"critics: oracle {len(oracle)} critiques; lm {len(crits)} critiques, "
          f"{sum(c.tokens for c in crits)} critic tokens in {dt:.1f}s")


def training_set(task, out: Path) -> Path:
    import pandas as pd

    rows = [{"prompt": q.prompt, "completion": sol, "loss_mask": None}
            for q in task.queries("train") for sol in task.reference_solutions(q, k=2)]
    pd.DataFrame(rows).to_parquet(out)
    return out


class one_rank_group:
    """This process as the only rank of a torch process group (NCCL on CUDA, gloo on CPU), as
    a trainer rank is inside its Ray actor."""

    def __init__(self, tmp: Path, device: torch.device) -> None:
        self.init = f"file://{tmp / 'rendezvous'}"
        self.backend = "nccl" if device.type == "cuda" else "gloo"

    def __enter__(self) -> None:
        import torch.distributed as dist

        dist.init_process_group(self.backend, init_method=self.init, rank=0, world_size=1)

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        dist.destroy_process_group()


def check_round(backend, kind: str, base: Path, train: Path, out: Path, sizes: Sizes,
                device: torch.device) -> None:
    """4 and 5. A round's finetune as a trainer rank runs it (FSDP with bf16 mixed precision
    and activation checkpointing; or LoRA), then its checkpoint in the generation backend."""
    from selftrain.backends import SamplingConfig
    from selftrain.config import LoraConfig, TrainConfig
    from selftrain.device import synchronize
    from selftrain.train.rank_trainer import FinetuneJob, RankTrainer
    from selftrain.train.sft import SFTSettings

    cfg = (TrainConfig(strategy="fsdp", bf16=True, activation_checkpointing=True) if kind == "fsdp"
           else TrainConfig(bf16=True, lora=LoraConfig(r=8)))
    rank = RankTrainer(cfg, 0, 1, device)
    settings = SFTSettings(lr=1e-3, batch_size=64, max_steps=sizes.train_steps, seed=0)
    synchronize(device)
    t0 = time.perf_counter()
    stats = rank.finetune(FinetuneJob(str(base), str(train), str(out), settings))
    synchronize(device)
    dt = time.perf_counter() - t0
    problem = round_problem(kind, rank, stats, out, device)
    if problem:
        raise SystemExit(f"FAIL: {kind} round: {problem}")
    backend.load_weights(str(out))  # the checkpoint, read into the live generation model
    gens = backend.generate(["1+1="], SamplingConfig(n=2, max_new_tokens=8), seed=0)
    memory = {k: stats[k] for k in ("state_mib", "peak_rss_mib", "peak_gpu_mib") if k in stats}
    print(f"{kind}: {stats['steps']} steps ({stats['precision']}), "
          f"{stats['tokens'] / dt:,.0f} tokens/s with the save, loss {stats['loss']:.3f}, "
          f"{stats['trainable_params']:,} trainable params, memory MiB {memory}; "
          f"checkpoint generates {gens[0][0].num_tokens} tokens")


def preference_pairs(train: Path, out: Path) -> Path:
    """pairs.parquet from the training set: each solution chosen, the next row's rejected."""
    import pandas as pd

    rows = pd.read_parquet(train)
    pd.DataFrame({"prompt": rows["prompt"], "chosen": rows["completion"],
                  "rejected": rows["completion"].shift(1, fill_value=rows["completion"].iloc[-1]),
                  }).to_parquet(out)
    return out


def check_dpo(kind: str, base: Path, pairs: Path, out: Path, sizes: Sizes,
              device: torch.device) -> None:
    """6 and 7. A DPO round (`train.objective: dpo`, reference: the round's start): one
    reference pass, then the steps; under LoRA the reference pass runs with the adapters off,
    so the rank holds one model, whose parameters do not grow."""
    from selftrain.config import DPOConfig, LoraConfig, TrainConfig
    from selftrain.train.rank_trainer import FinetuneJob, RankTrainer
    from selftrain.train.sft import SFTSettings

    cfg = (TrainConfig(strategy="fsdp", bf16=True, activation_checkpointing=True) if kind == "fsdp"
           else TrainConfig(bf16=True, lora=LoraConfig(r=8)))
    rank = RankTrainer(cfg, 0, 1, device)
    settings = SFTSettings(lr=1e-3, batch_size=32, max_steps=sizes.train_steps, seed=0)
    job = FinetuneJob(str(base), str(pairs), str(out), settings, objective="dpo",
                      dpo=DPOConfig(beta=0.1, nll_weight=1.0))
    t0 = time.perf_counter()
    stats = rank.finetune(job)
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in rank.model.parameters())
    rank.finetune(replace(job, out_path=str(out) + "-again"))
    problem = round_problem(kind, rank, stats, out, device)
    if rank.reference_passes != 2 or stats["reference_passes"] != 1:
        problem = f"{rank.reference_passes} reference passes in two rounds, not 2"
    elif sum(p.numel() for p in rank.model.parameters()) != params:
        problem = "the model grew between rounds (a second copy for the reference?)"
    elif not all(math.isfinite(stats[k]) for k in ("train/loss", "train/rewards/margins")):
        problem = f"non-finite DPO figures {stats}"
    if problem:
        raise SystemExit(f"FAIL: dpo-{kind} round: {problem}")
    print(f"dpo-{kind}: {stats['steps']} steps ({stats['precision']}) in {dt:.1f}s, one reference "
          f"pass per round, loss {stats['train/loss']:.3f}, margin "
          f"{stats['train/rewards/margins']:.3f}, accuracy {stats['train/rewards/accuracies']:.2f}")


def check_scorer_and_judge(tmp: Path, device: torch.device) -> None:
    """8. The model-backed scorer and judge on the device: a reward model (one-label Llama head,
    chat template; float32 and bfloat16) and DARLING's kind of pair classifier (DeBERTa-v2),
    both tiny and random, give the CPU's float32 scores and classes."""
    from transformers import (
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    from selftrain.judges.classifier import ClassifierJudge
    from selftrain.models.tiny_model import build_char_tokenizer
    from selftrain.scorers.reward_model import RewardModelScorer

    tok = build_char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256, num_labels=1,
        pad_token_id=tok.pad_token_id))
    torch.nn.init.normal_(rm.score.weight, std=1.0)
    rm.save_pretrained(tmp / "rm")
    tok.save_pretrained(tmp / "rm")
    prompts = ["sea: b d", "write a line about the sky", "x"] * 4
    replies = ["bavo dune", "a long line about the sky and its clouds", "y"] * 4
    want = RewardModelScorer(str(tmp / "rm"), device="cpu").logits(prompts, replies)
    on_device = RewardModelScorer(str(tmp / "rm"), device=str(device), batch_size=4)
    if next(on_device.model.parameters()).device.type != device.type:
        raise SystemExit(f"FAIL: the reward model is not on {device.type}")
    got = on_device.logits(prompts, replies)
    half = RewardModelScorer(str(tmp / "rm"), device=str(device), dtype="bfloat16").logits(
        prompts, replies)
    worst, worst_half = (max(abs(a - b) for a, b in zip(x, want)) for x in (got, half))
    if worst > 1e-3 or worst_half > 0.1 * (1 + max(map(abs, want))):
        raise SystemExit(f"FAIL: reward-model logits on {device.type} differ from the CPU's by "
                         f"{worst:.2e} (float32) / {worst_half:.2e} (bfloat16)")
    print(f"reward_model scorer: {len(got)} logits equal the CPU's within {worst:.1e} "
          f"(bfloat16: {worst_half:.1e})")

    config = DebertaV2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=128, num_labels=2,
                             pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    DebertaV2ForSequenceClassification(config).save_pretrained(tmp / "pair")
    tok.save_pretrained(tmp / "pair")
    groups = [["2+3=5", "3+2=5", "5-0=5", "1+4=5"], ["4*3=12", "3*4=12", "12=12", "6+6=12"]]
    pairs = sorted({(a, b) for g in groups for a in g for b in g if a < b})
    cpu = ClassifierJudge(model=str(tmp / "pair"), batch_size=5)
    probs = cpu.same_probability(pairs)
    ordered = sorted(probs)  # halfway between two neighbours: no pair within noise of it
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    cpu.threshold = threshold
    judge = ClassifierJudge(model=str(tmp / "pair"), batch_size=5, device=str(device),
                            threshold=threshold)
    worst = max(abs(a - b) for a, b in zip(judge.same_probability(pairs), probs))
    if worst > 1e-4 or judge.classes(groups) != cpu.classes(groups):
        raise SystemExit(f"FAIL: the pair classifier on {device.type} differs from the CPU's "
                         f"({worst:.2e})")
    print(f"classifier judge: {len(pairs)} pair probabilities within {worst:.1e} of the CPU's, "
          f"the same classes")


def check_weight_path(tmp: Path, device: torch.device, small: bool) -> None:
    """9. What a round's new weights cost on their way to a generator, for a model of
    Qwen2.5-1.5B's shape (random; small on the CPU): the trainer's float32 state to the host,
    the checkpoint written as rank 0 writes it (and synced to disk), and read into a live
    bfloat16 generator as the HF backend reads it; beside them the in-memory copy from the
    trainer's tensors into the generator's on the device, the floor any weight-transfer path
    (NCCL, CUDA IPC) has. docs/design.md ("How new weights reach the generators") uses these."""
    import os

    from transformers import AutoModelForCausalLM, Qwen2Config

    from selftrain.device import synchronize
    from selftrain.models.tiny_model import build_char_tokenizer
    from selftrain.train.checkpoints import load_into, write_checkpoint

    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, vocab_size=512) if small else
             dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, vocab_size=151936))
    config = Qwen2Config(**shape, tie_word_embeddings=True, max_position_embeddings=4096)
    with torch.device(device):
        trainer = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        generator = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in trainer.parameters())
    gb = params * 4 / 1e9

    def timed(fn) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    state: dict[str, torch.Tensor] = {}
    to_host = timed(lambda: state.update({k: v.to("cpu") for k, v in trainer.state_dict().items()}))
    out = tmp / "weights" / "checkpoint"
    out.parent.mkdir()
    write = timed(lambda: write_checkpoint(out, trainer, build_char_tokenizer(), state))
    sync = timed(os.sync)
    read = timed(lambda: load_into(generator, out))
    pairs = list(zip(generator.parameters(), trainer.parameters()))
    copy = timed(lambda: [g.data.copy_(t.data) for g, t in pairs])
    with torch.no_grad():
        gen_norm = sum(float(p.float().norm()) for p in generator.parameters())
        want = sum(float(p.to(torch.bfloat16).float().norm()) for p in trainer.parameters())
    if abs(gen_norm - want) > 1e-3 * want:
        raise SystemExit("FAIL: the generator does not hold the trainer's weights after the copy")
    print(f"weight path, {params / 1e9:.2f}B parameters ({gb:.1f} GB float32): to host "
          f"{to_host:.2f} s, checkpoint write {write:.2f} s + sync {sync:.2f} s "
          f"({gb / (write + sync):.2f} GB/s), read into the generator {read:.2f} s "
          f"({gb / read:.2f} GB/s), in-memory copy on {device.type} {copy * 1e3:.1f} ms")


def round_problem(kind: str, rank, stats: dict, out: Path, device: torch.device) -> str | None:
    """What is wrong with a finished round, or None."""
    total = sum(p.numel() for p in rank.model.parameters())
    if stats["steps"] == 0:
        return "no training step ran"
    if next(rank.model.parameters()).device.type != device.type:
        return f"the model is not on {device.type}"
    if not (out / "model.safetensors").is_file():
        return f"no consolidated checkpoint in {out}"
    if device.type == "cuda" and kind == "fsdp" and "bf16 weights" not in stats["precision"]:
        return f"FSDP did not compute in bf16 ({stats['precision']})"
    if kind == "lora" and not (stats["trainable_params"] < total / 10
                               and (out / "adapter" / "adapter_model.safetensors").is_file()):
        return f"{stats['trainable_params']} of {total} params trained, or no adapter saved"
    return None


if __name__ == "__main__":
    sys.exit(main())
