"""`multihop-oracle`: the exact step-level critic for the embedded multihop task.

A step is one turn (policy text + observation). A search is ok when its results bring a
document of the question's gold chain that no earlier step retrieved (progress); the answer is
ok when it is correct; an unreadable action is never ok. Which documents a search returned is
read from the observation's titles (entity names are unique titles in the world), so the
critic judges what the policy actually saw, without a retriever of its own.
"""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict
from selftrain.agent import exact_match, observation_titles, parse_action, split_turns


def judge_steps(data: dict[str, Any], steps: list[str]) -> list[StepVerdict]:
    """One verdict per step, for a query with `chain_names` and `golden_answers` in its data."""
    chain = list(data["chain_names"])
    found: set[str] = set()
    out = []
    for step in steps:
        turns = split_turns(step)
        text, observation = turns[0] if turns else ("", "")
        action = parse_action(text)
        missing = [name for name in chain if name not in found]
        if action.kind == "search":
            new = [t for t in observation_titles(observation) if t in chain and t not in found]
            found.update(new)
            if new:
                out.append(StepVerdict(ok=True, score=1.0, feedback="ok"))
            elif missing:
                out.append(StepVerdict(ok=False, score=0.0, feedback=(
                    f"results had no new document of the chain; next needed: {missing[0]}")))
            else:
                out.append(StepVerdict(ok=False, score=0.0, feedback=(
                    "results had no new document of the chain; every needed document is "
                    "already retrieved: give the answer")))
        elif action.kind == "answer":
            if exact_match(action.content, data["golden_answers"]):
                out.append(StepVerdict(ok=True, score=1.0, feedback="ok"))
            elif missing:
                out.append(StepVerdict(ok=False, score=0.0, feedback=(
                    f"answer {action.content!r} is wrong: the chain is incomplete; "
                    f"next needed: {missing[0]}")))
            else:
                out.append(StepVerdict(ok=False, score=0.0, feedback=(
                    f"answer {action.content!r} is wrong: the documents retrieved hold the "
                    f"answer; read the last one, {chain[-1]}")))
        else:
            out.append(StepVerdict(ok=False, score=0.0, feedback=(
                "invalid action: put a query between <search> and </search> or the answer "
                "between <answer> and </answer>")))
    return out


class MultihopOracle:
    """Exact critic from the gold chain stored in each query's data."""

    name = "multihop-oracle"

    def __init__(self, task: Any = None) -> None:
        self.task = task

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        return [Critique(sample_id=req.sample_id, critic=self.name,
                         verdicts=judge_steps(req.query.data, req.steps))
                for req in requests]
