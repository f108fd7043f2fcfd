"""`code-exec`: a step critic for code tasks that needs no oracle, only the task's tests.

It runs the program against the tests in the sandbox with a line trace. The flagged line is
the first that went wrong on the evidence: the line that raised (or does not parse); when a
test's assert fails without an exception, the program's last line that ran before it (after
which the value the test checked was final); on a timeout or memory verdict, the last line.
Lines before the flagged one are ok; the flagged one and those after it are not.
"""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict
from selftrain.sandbox import ExecResult
from selftrain.tasks.code_exec import ExecutableTask


def _step_of_line(completion: str, line: int | None) -> int | None:
    """Index among the non-empty lines of `completion` of its (1-based) line `line`."""
    if line is None:
        return None
    lines = completion.splitlines()
    if not 1 <= line <= len(lines) or not lines[line - 1].strip():
        return None
    return sum(1 for text in lines[: line - 1] if text.strip())


def _feedback(result: ExecResult) -> str:
    if result.status == "failed":
        return f"{result.failing_test} failed"
    if result.status in ("timeout", "memory"):
        return f"the program ran out of {'time' if result.status == 'timeout' else 'memory'}"
    return f"raised {result.exception}" + (f" in {result.failing_test}" if result.failing_test else "")


class CodeExecCritic:
    name = "code-exec"

    def __init__(self, task: Any = None) -> None:
        if not isinstance(task, ExecutableTask):
            raise TypeError(f"critic code-exec needs a code task (program_of, tests_of, "
                            f"body_offset, run_programs); got {type(task).__name__}")
        self.task = task

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        completions = [r.completion or "".join(s + "\n" for s in r.steps) for r in requests]
        results = self.task.run_programs([r.query for r in requests], completions, trace=True)
        return [self._one(r, c, res) for r, c, res in zip(requests, completions, results)]

    def _one(self, req: CritiqueRequest, completion: str, result: ExecResult) -> Critique:
        n = len(req.steps)
        if result.passed or n == 0:
            flagged = n
        else:
            line = result.error_line if result.status == "error" else result.trace_line
            offset = self.task.body_offset(req.query, completion)
            step = _step_of_line(completion, None if line is None else line - offset)
            if step is None:  # raised in a test, in the header, or no trace: judge the end
                step = 0 if line is not None and line <= offset else n - 1
            flagged = min(step, n - 1)
        verdicts = [StepVerdict(ok=True, score=1.0, feedback="ok") if i < flagged else
                    StepVerdict(ok=False, score=0.0,
                                feedback=_feedback(result) if i == flagged else "after the failing line")
                    for i in range(n)]
        return Critique(sample_id=req.sample_id, critic=self.name, verdicts=verdicts,
                        extra={"status": result.status})
