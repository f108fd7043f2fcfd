"""The raw side of the benchmark: the computation a loop stage did, without the loop.

Like for like: the same weights file (the one the loop's worker held, or the finetune's init),
the same prompts, chunks (`rollout.batch_size // n` prompts each), per-chunk seeds
(`stages.chunk_seed`), sampling settings and `model.generate` arguments as the hf backend, and
one torch thread, as a rollout worker or training rank with one CPU has. The outputs are then
the loop's own (`identical_share` says how many), so the seconds compare the same work.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch


def weights_file(path: str | Path) -> dict[str, str]:
    """The file a side loaded: path and sha256 of its model.safetensors."""
    file = Path(path) / "model.safetensors"
    h = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"path": str(file), "sha256": h}


def raw_generate(policy: str, prompts: list[str], params, batch_size: int,
                 seeds: list[int]) -> dict[str, Any]:
    """Plain `model.generate` over the loop's chunks with the loop's seeds: seconds from prompt
    texts to completion texts (tokenise, generate, decode; model already loaded, as in a warm
    worker), tokens through EOS, and the texts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    per_chunk = max(1, batch_size // max(1, params.n))
    texts, tokens, seconds = [], 0, 0.0
    with torch.inference_mode():
        for c, i in enumerate(range(0, len(prompts), per_chunk)):
            # timed from prompt texts to completion texts, as the loop's worker does
            start = time.perf_counter()
            enc = tok(prompts[i : i + per_chunk], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            torch.manual_seed(seeds[c])
            out = model.generate(**enc, do_sample=params.temperature > 0,
                                 temperature=params.temperature, top_p=params.top_p, top_k=None,
                                 num_return_sequences=params.n,
                                 max_new_tokens=params.max_new_tokens,
                                 stop_strings=list(params.stop) or None,
                                 tokenizer=tok if params.stop else None,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for ids in out[:, enc["input_ids"].shape[1] :].tolist():
                if tok.eos_token_id in ids:
                    ids = ids[: ids.index(tok.eos_token_id) + 1]
                else:
                    ids = [t for t in ids if t != tok.pad_token_id]
                tokens += len(ids)
                texts.append(tok.decode(ids, skip_special_tokens=True))
            seconds += time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "texts": texts}


def raw_finetune(init: str, train_path: Path, train_cfg, seed: int) -> dict[str, float]:
    """Seconds (wall, and this thread's CPU) of the plain in-process SFT loop on the round's
    training set, from `init`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selftrain.cluster.trainer import examples_from_rows, finetune_job
    from selftrain.train.sft import train_sft

    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(init)
    job = finetune_job(train_cfg, init_path=init, train_path=train_path, out_path="-", seed=seed)
    start, cpu = time.perf_counter(), time.thread_time()  # from the training set's file
    rows = pd.read_parquet(train_path).to_dict("records")
    train_sft(model, tok, examples_from_rows(rows), job.settings, torch.device("cpu"))
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.thread_time() - cpu}


def identical_share(loop_texts: list[str], raw_texts: list[str]) -> float:
    """Share of samples whose text the raw side reproduced exactly (1.0: the same work)."""
    if len(loop_texts) != len(raw_texts) or not loop_texts:
        return 0.0
    return sum(a == b for a, b in zip(loop_texts, raw_texts)) / len(loop_texts)


def vllm_generate(policy: str, prompts: list[str], params) -> dict[str, Any] | None:
    """Tokens and seconds of vLLM's offline engine on the same prompts and weights, when
    .venv-vllm exists (a subprocess in that venv); None otherwise."""
    import json
    import os
    import subprocess

    python = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        return None
    script = f"""
import json, sys, time
from vllm import LLM, SamplingParams
prompts = json.load(sys.stdin)
llm = LLM({policy!r}, dtype="float32", enforce_eager=True, seed=0)
params = SamplingParams(n={params.n}, temperature={params.temperature}, top_p={params.top_p},
                        max_tokens={params.max_new_tokens})
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
