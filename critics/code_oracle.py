"""`code-oracle`: the exact step critic of the embedded `code` task, relative to its Python
subset (the solver's styles of each operation).

A line is ok when the lines up to it are the first lines of some correct program of the subset
(every combination of the styles, `all_solutions`), compared with spaces inside a line removed
and indentation kept: from an ok line some continuation passes, from a wrong one none in the
subset does. The search is over at most a few hundred programs per query. A correct program
outside the subset (`3 * x` for `x * 3`) is judged wrong from its first differing line: use
`code-exec` where that matters.
"""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict
from selftrain.tasks.code_programs import Op, all_solutions


def _key(line: str) -> tuple[int, str]:
    stripped = line.lstrip(" ")
    return len(line) - len(stripped), "".join(stripped.split())


class CodeOracle:
    name = "code-oracle"

    def __init__(self, task: Any = None, max_programs: int = 1000) -> None:
        self.task = task
        self.max_programs = max_programs
        self._programs: dict[str, list[list[tuple[int, str]]]] = {}

    def _subset(self, query) -> list[list[tuple[int, str]]]:
        if query.query_id not in self._programs:
            ops = tuple(Op(kind, expr) for kind, expr in query.data["ops"])
            self._programs[query.query_id] = [
                [_key(line) for line in body.splitlines() if line.strip()]
                for body in all_solutions(ops, cap=self.max_programs)]
        return self._programs[query.query_id]

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        out = []
        for req in requests:
            alive = self._subset(req.query)
            verdicts = []
            for i, step in enumerate(req.steps):
                alive = [p for p in alive if len(p) > i and p[i] == _key(step)]
                ok = bool(alive)
                if not verdicts or verdicts[-1].ok:
                    feedback = "ok" if ok else "no correct program continues from this line"
                else:
                    ok, feedback = False, "after the first wrong line"
                verdicts.append(StepVerdict(ok=ok, score=float(ok), feedback=feedback))
            out.append(Critique(sample_id=req.sample_id, critic=self.name, verdicts=verdicts))
        return out
