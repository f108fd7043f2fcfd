#!/usr/bin/env bash
# Run the vLLM tests on CPU: build (or reuse) .venv-vllm, then pytest in it.
#
#   scripts/test_vllm.sh                      # backend contract (vLLM side) + loop e2e
#   scripts/test_vllm.sh tests/test_x.py -x   # any pytest arguments replace the default
#
# SELFTRAIN_REQUIRE_VLLM=1 turns "vLLM is not installed" from a skip into a failure, so a broken
# venv cannot pass as a run of skipped tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_vllm_venv.sh

# The default run: the backend contract, vLLM side, then one round of the loop with the engine
# inside a Ray actor. `-k vllm` filters every file listed: a file whose name holds "vllm"
# (tests/test_vllm_e2e.py) runs whole; for any other file widen it, e.g. -k "vllm or e2e".
DEFAULT=(tests/test_backend_contract.py tests/test_vllm_e2e.py tests/test_vllm_served_critic.py tests/test_vllm_finetuned.py -k vllm)
if [[ $# -eq 0 ]]; then
  set -- "${DEFAULT[@]}"
fi
SELFTRAIN_REQUIRE_VLLM=1 exec .venv-vllm/bin/python -m pytest "$@"
