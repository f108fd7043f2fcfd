#!/usr/bin/env bash
# CUDA smoke test of the compute pieces, in-process (no Ray, no vLLM, no wandb): generation
# backend, a bf16 finetune step and a critic on the tiny model. Prints tokens/s; fails loudly
# when CUDA is not used. Needs only torch and transformers (+ tokenizers) in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" scripts/gpu_check.py "$@"
