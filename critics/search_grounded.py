"""`search-grounded`: a cheap step critic for open-domain search that needs no gold chain and
no gold answer, only the documents the trajectory itself retrieved.

One verdict per step (turn), by these rules:

- a search is ok when its observation shows at least one document that no earlier step
  showed (same title and text); it is flagged when it returned no document, or only
  documents already retrieved (a repeated or redundant query);
- an answer is ok when its SQuAD-normalised text (`agent.normalize_squad`, as the task scores
  answers) occurs, as whole words, in the normalised title + text of a document some earlier
  step retrieved; it is flagged when it occurs in none (not grounded: a guess or a
  hallucination), or when nothing of it is left after normalisation;
- an invalid action (neither a search nor an answer) is flagged.

A new document is not necessarily a relevant one, and a grounded answer is not necessarily
the right one: this critic checks that the agent makes progress and answers from evidence;
correctness stays the task's outcome check (the critique arm needs both).
"""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest, StepVerdict
from critics.search_turns import SearchTurn, ShownDoc, read_turns
from selftrain.agent import normalize_squad

OK = StepVerdict(ok=True, score=1.0, feedback="ok")


def _flag(why: str) -> StepVerdict:
    return StepVerdict(ok=False, score=0.0, feedback=why)


def grounded_in(answer: str, docs: list[ShownDoc]) -> bool:
    """Whether the normalised answer occurs as whole words in a normalised document."""
    needle = f" {normalize_squad(answer)} "
    return any(needle in f" {normalize_squad(d.title + ' ' + d.text)} " for d in docs)


def judge_turn(turn: SearchTurn) -> StepVerdict:
    """The verdict of one step by the rules of the module docstring."""
    if turn.kind == "search":
        if not turn.docs:
            return _flag(f"search {turn.content!r} returned no document; try other words")
        if not any(turn.new):
            return _flag(f"search {turn.content!r} retrieved only documents already retrieved; "
                         f"search for what is still missing, or answer")
        return OK
    if turn.kind == "answer":
        if not normalize_squad(turn.content):
            return _flag(f"answer {turn.content!r} is empty once normalised")
        if not grounded_in(turn.content, turn.seen_before):
            return _flag(f"answer {turn.content!r} appears in no retrieved document; search "
                         f"for it, or answer with what the documents say")
        return OK
    return _flag("invalid action: put a query between <search> and </search> or the answer "
                 "between <answer> and </answer>")


class SearchGrounded:
    """Retrieval-grounded heuristic verdicts (module docstring); no args besides the task."""

    name = "search-grounded"

    def __init__(self, task: Any = None) -> None:
        del task  # the verdicts come from the steps alone: no gold data is read

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        return [Critique(sample_id=req.sample_id, critic=self.name,
                         verdicts=[judge_turn(t) for t in read_turns(req.steps)])
                for req in requests]
