#!/usr/bin/env bash
# Start a Ray head or join a worker node, for selftrain jobs on an existing cluster.
#
#   scripts/cluster.sh head   [--port 6379] [--num-gpus N]     # on the head node
#   scripts/cluster.sh worker HEAD_IP:6379 [--num-gpus N]      # on every other node
#   scripts/cluster.sh stop                                    # stop this node's Ray
#
# Then, from any machine that reaches the head's dashboard (port 8265):
#   ray job submit --address http://HEAD_IP:8265 --working-dir . \
#       --runtime-env-json '{"pip": ["-e", "."]}' -- \
#       selftrain compare configs/countdown_compare.yaml ray.address=auto run_root=/shared/runs
#
# run_root must be a path every node sees (NFS, Lustre) or an object-store URI, because
# checkpoints written by the trainer on one node are read by rollout workers on others.
set -euo pipefail
RAY="${RAY:-ray}"
cmd="${1:-}"; shift || true
case "$cmd" in
  head)
    port=6379
    extra=()
    while [[ $# -gt 0 ]]; do
      case "$1" in --port) port="$2"; shift 2;; *) extra+=("$1"); shift;; esac
    done
    exec "$RAY" start --head --port="$port" --dashboard-host=0.0.0.0 --disable-usage-stats "${extra[@]}"
    ;;
  worker)
    address="${1:?usage: cluster.sh worker HEAD_IP:PORT}"; shift
    exec "$RAY" start --address="$address" --disable-usage-stats "$@"
    ;;
  stop)
    exec "$RAY" stop
    ;;
  *)
    sed -n '2,16p' "$0"; exit 2;;
esac
