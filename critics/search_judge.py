"""`search-judge`: a generative step critic for open-domain search, needing no gold chain.

It composes a generative critic (`base`: the served `openai` critic, or the in-process `lm`)
with a view of the trajectory made for judging search: the question, then one line per turn
(the query and the documents it brought back, the answer, or the invalid action), so the model
sees every query and every document retrieved so far. The base critic fills its template with
that view and parses the verdict lines as always (`critics.verdicts`): one `Step i: correct|
incorrect — why` line per turn, a missing or unreadable line an unknown verdict (`ok=None`).

    critic:
      name: search-judge
      args:
        base: openai                       # or lm
        base_args: {base_url: "http://127.0.0.1:8001/v1", model: Qwen/Qwen2.5-7B-Instruct}
        max_doc_chars: 600                 # cut each document's text (null: whole)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from critics.protocol import Critique, CritiqueRequest, PreflightCheck, checked
from critics.registry import CriticLoadError, build_critic
from critics.search_turns import SearchTurn, read_turns

SEARCH_TEMPLATE = (
    "You check the work of a search agent, turn by turn. Its question:\n{prompt}\n\n"
    "Its turns, one per line: a search with the documents it returned (a document an earlier "
    "turn already returned is named, not repeated), or its final answer:\n{steps}\n"
    "Judge every turn in order. A search is correct when it retrieved a document relevant to "
    "the question that no earlier turn retrieved. An answer is correct when the documents "
    "retrieved before it support it. Write exactly one line per turn and nothing else:\n"
    "Step 1: correct — short reason\nStep 2: incorrect — what is wrong\n\nVerdicts:\n"
)
"""The base critic's `template` unless `base_args` sets one: `{prompt}` is the question,
`{steps}` the numbered turn lines, `{num_steps}` their count."""


def render_turn(turn: SearchTurn, max_doc_chars: int | None = None) -> str:
    """One line for one turn (the base critic joins a step's whitespace into single spaces)."""
    if turn.kind == "answer":
        return f"answer: {turn.content}"
    if turn.kind == "invalid":
        return f"invalid action (neither a search nor an answer): {turn.text[:200]}"
    if not turn.docs:
        return f"search: {turn.content} -> no documents"
    shown = []
    for i, (doc, new) in enumerate(zip(turn.docs, turn.new), 1):
        if not new:
            shown.append(f'[{i}] "{doc.title}" (already retrieved)')
            continue
        text = doc.text if max_doc_chars is None else doc.text[:max_doc_chars]
        shown.append(f'[{i}] "{doc.title}": {text}')
    return f"search: {turn.content} -> " + " ".join(shown)


def search_view(request: CritiqueRequest, max_doc_chars: int | None = None) -> CritiqueRequest:
    """The request as the base critic should read it: the question as its prompt, the rendered
    turns as its steps (one per step, so the verdicts line up with the original steps)."""
    query = request.query
    question = query.data.get("question") or query.prompt
    steps = [render_turn(t, max_doc_chars) for t in read_turns(request.steps)]
    return dataclasses.replace(request, query=dataclasses.replace(query, prompt=question),
                               steps=steps)


class SearchJudge:
    """`base` (a generative critic's registry name) built with `base_args`, its `template`
    defaulting to `SEARCH_TEMPLATE`, asked about `search_view`s of the requests."""

    def __init__(self, task: Any = None, *, base: str = "openai",
                 base_args: dict[str, Any] | None = None,
                 max_doc_chars: int | None = None) -> None:
        if max_doc_chars is not None and max_doc_chars < 1:
            raise CriticLoadError(f"search-judge critic: critic.args.max_doc_chars must be >= 1 "
                                  f"or null, got {max_doc_chars}")
        args = {"template": SEARCH_TEMPLATE, **(base_args or {})}
        try:
            self.base = build_critic(base, None, args, task)
        except CriticLoadError as err:
            raise CriticLoadError(f"search-judge critic: its base {base!r} (critic.args.base, "
                                  f"a generative critic that takes a template: openai or lm) "
                                  f"failed: {err}") from err
        self.max_doc_chars = max_doc_chars
        self.name = f"search-judge({self.base.name})"

    def check(self) -> None:
        """The base critic's pre-flight, when it has one (a served critic's endpoint)."""
        if isinstance(self.base, PreflightCheck):
            self.base.check()

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        views = [search_view(r, self.max_doc_chars) for r in requests]
        out = checked(self.base, views)
        for crit in out:
            crit.critic = self.name
        return out
