"""CUDA smoke test: generation, a bf16 finetune step and a critic, on the tiny model.

Runs the plain worker classes in-process, exactly as Ray would run them inside actors, so it
needs nothing but torch, transformers and tokenizers. Exits non-zero (loudly) when CUDA is not
available or a piece did not run on the GPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    from selftrain.device import require_cuda, synchronize

    device = require_cuda()
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    from selftrain.backends import SamplingConfig
    from selftrain.backends.hf import HFBackend
    from selftrain.config import TinyModelConfig
    from selftrain.sft import SFTExample, SFTSettings, train_sft
    from selftrain.tasks.countdown import CountdownTask
    from selftrain.tiny_model import (
        build_char_tokenizer,
        build_tiny_llama,
        portable_tokenizer_config,
    )

    task = CountdownTask()
    tmp = Path(tempfile.mkdtemp(prefix="selftrain-gpu-check-"))
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(), len(tokenizer), tokenizer)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    portable_tokenizer_config(tmp / "model")

    # 1. generation backend
    backend = HFBackend(str(tmp / "model"), dtype="bfloat16")
    param = next(backend.model.parameters())
    if param.device.type != "cuda":
        raise SystemExit(f"FAIL: generation backend put the model on {param.device}, not CUDA")
    prompts = [q.prompt for q in task.queries("train")][:128]
    params = SamplingConfig(n=4, temperature=1.0, max_new_tokens=64)
    backend.generate(prompts[:8], params, seed=0)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    gens = backend.generate(prompts, params, seed=1)
    synchronize(device)
    dt = time.perf_counter() - t0
    tokens = sum(g.num_tokens for outs in gens for g in outs)
    print(f"generate: {len(prompts) * params.n} sequences, {tokens} tokens, "
          f"{tokens / dt:,.0f} tokens/s")

    # 2. finetune steps in bf16 autocast
    examples = [SFTExample(q.prompt, sol) for q in task.queries("train")
                for sol in task.reference_solutions(q, k=2)]
    net = backend.model.float().train()
    settings = SFTSettings(epochs=1, lr=1e-3, batch_size=64, max_steps=20)
    synchronize(device)
    t0 = time.perf_counter()
    stats = train_sft(net, backend.tokenizer, examples, settings, device,
                      autocast_dtype=torch.bfloat16)
    synchronize(device)
    dt = time.perf_counter() - t0
    if next(net.parameters()).device.type != "cuda" or stats["steps"] == 0:
        raise SystemExit("FAIL: the finetune step did not run on CUDA")
    print(f"train: {stats['steps']} steps bf16, {stats['tokens']} tokens, "
          f"{stats['tokens'] / dt:,.0f} tokens/s, loss {stats['loss']:.3f}")

    # 3. critics: the exact oracle and the generative lm critic on the GPU
    from critics import CritiqueRequest, build_critic, checked

    queries = task.queries("train")[:32]
    texts = backend.generate([q.prompt for q in queries], SamplingConfig(n=1), seed=2)
    requests = [CritiqueRequest(sample_id=str(i), query=q, steps=task.split_steps(t[0].text))
                for i, (q, t) in enumerate(zip(queries, texts))]
    oracle = checked(build_critic("countdown-oracle", None, {}, task), requests)
    lm = build_critic("lm", None, {"model_path": str(tmp / "model")}, task)
    t0 = time.perf_counter()
    crits = checked(lm, requests)
    dt = time.perf_counter() - t0
    print(f"critics: oracle {len(oracle)} critiques; lm {len(crits)} critiques, "
          f"{sum(c.tokens for c in crits)} critic tokens in {dt:.1f}s")
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print("OK: generation, bf16 finetune and critics ran on CUDA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
