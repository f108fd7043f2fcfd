#!/usr/bin/env bash
# CUDA smoke test of the compute pieces, in-process (no Ray, no vLLM, no wandb): generation
# backend, a bf16 finetune step, critics, then a round's finetune with FSDP (bf16 mixed
# precision, activation checkpointing) and with LoRA on a one-rank process group, each
# checkpoint loaded back into the backend. Prints tokens/s and memory; fails loudly when CUDA is
# not used. `--cpu` runs the same steps on the CPU, small (tests/test_gpu_check.py does).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" scripts/gpu_check.py "$@"
