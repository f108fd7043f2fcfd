"""Where the rollout worker's and the training rank's seconds go in a benchmark run (py-spy).

    .venv/bin/pip install -c constraints.txt -e ".[profile]"   # py-spy
    .venv/bin/python scripts/profile_workers.py [--out runs/bench-profile]

Runs `scripts/benchmark.py --sizes 30,60 --reps 1`, attaches `py-spy record` (200 Hz, raw
stacks) to the rollout worker and the training rank of its second run (60 queries per level:
the demo size), and prints the share of each worker's busy samples by what the stack shows.
Workers are found as descendants of the benchmark process, so other Ray clusters on the
machine are never sampled. Shares within a worker hold on a busy machine; seconds do not.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = [  # (label, function names any of which in a stack decide it), first match wins
    ("start-up load (warm: imports, model, one step)", {"warm"}),
    ("actor start-up (__init__, join)", {"__init__", "join"}),
    ("finetune: checkpoint save", {"save"}),
    ("finetune: weight load (prepare)", {"prepare"}),
    ("finetune: parquet read", {"read_parquet"}),
    ("finetune: backward", {"_engine_run_backward"}),
    ("finetune: optimizer step", {"optimizer_step"}),
    ("finetune: forward, tokenize, collate", {"train_sft"}),
    ("generate: weight load", {"_use"}),
    ("generate: decode outputs", {"_finish"}),
    ("generate: stopping criteria", {"StoppingCriteriaList"}),
    ("generate: model forward", {"_wrapped_call_impl"}),
    ("generate: sampling loop", {"_sample"}),
    ("generate: other", {"generate"}),
]


def descendants(root: int) -> dict[int, str]:
    """{pid: process title} of every live descendant of `root`."""
    parent, title = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            title[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes() \
                .split(b"\0")[0].decode(errors="replace")
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, p in parent.items():
            if p == pid and child not in found:
                found[child] = title.get(child, "")
                frontier.append(child)
    return found


def second_workers(bench: subprocess.Popen) -> dict[str, int]:
    """The rollout worker and training rank of the benchmark's second loop run."""
    seen: set[int] = set()
    while bench.poll() is None:
        procs = descendants(bench.pid)
        ranks = [p for p, t in procs.items() if t.startswith("ray::TrainerWorker")]
        rollouts = [p for p, t in procs.items() if t.startswith("ray::RolloutWorker")]
        new = [p for p in ranks if p not in seen]
        if seen and new and rollouts:
            return {"rollout_worker": max(rollouts), "training_rank": new[0]}
        seen |= set(ranks)
        time.sleep(0.1)
    raise SystemExit("the benchmark ended before its second run started")


def shares(raw: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        names = {part for frame in stack.split(";") for part in frame.split(" (")[0].split(".")}
        counts[next((label for label, fns in PARTS if fns & names), "other")] += int(n)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-profile")
    out = Path(ap.parse_args().out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    bench = subprocess.Popen([sys.executable, str(REPO / "scripts" / "benchmark.py"), "--sizes",
                              "30,60", "--reps", "1", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spies = {role: subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "200",
                                     "--format", "raw", "--nonblocking", "-o",
                                     str(out / f"{role}.txt")], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
             for role, pid in second_workers(bench).items()}
    bench.wait()
    for role, proc in spies.items():
        proc.wait(timeout=60)
        counts = shares(out / f"{role}.txt")
        total = sum(counts.values())
        print(f"{role}: {total} samples")
        for label, n in counts.most_common():
            print(f"  {label:48s} {n / total:6.1%}")
    return bench.returncode


if __name__ == "__main__":
    sys.exit(main())
