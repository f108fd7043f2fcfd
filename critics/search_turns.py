"""A search trajectory's steps read back for the search critics (`search-grounded`,
`search-judge`): per step its action and the documents its observation showed, marked new or
already retrieved by an earlier step.

Documents are read from the observation text (`Doc i(Title: "T") text`, agent.py's rendering),
so a critic judges what the policy saw, without a retriever of its own. Two documents are the
same when title and text are: a wiki-18 article is split into passages that share a title.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from selftrain.agent import OBS_CLOSE, OBS_OPEN, ActionKind, parse_action, split_turns

_DOC_HEAD = re.compile(r'(?:^|<information>)Doc \d+\(Title: "(.*?)"\) ', re.M)


@dataclass(frozen=True)
class ShownDoc:
    """A document as an observation shows it."""

    title: str
    text: str


@dataclass
class SearchTurn:
    """One step of a search trajectory."""

    kind: ActionKind
    content: str
    """The search query or the answer ("" when the action is invalid)."""
    text: str
    """What the policy wrote this step."""
    docs: list[ShownDoc] = field(default_factory=list)
    """The documents the search showed, in rank order (none for an answer or invalid step)."""
    new: list[bool] = field(default_factory=list)
    """Per document of `docs`: no earlier step showed it."""
    seen_before: list[ShownDoc] = field(default_factory=list)
    """Every distinct document the earlier steps showed, in the order they first appeared."""


def observation_docs(observation: str) -> list[ShownDoc]:
    """The documents of a search observation, in rank order; [] for any other observation."""
    if not observation.startswith(OBS_OPEN):
        return []
    close = observation.rfind(OBS_CLOSE)
    end = close if close >= 0 else len(observation)
    heads = list(_DOC_HEAD.finditer(observation, 0, end))
    stops = [h.start() for h in heads[1:]] + [end]
    return [ShownDoc(title=head[1], text=observation[head.end() : stop].strip())
            for head, stop in zip(heads, stops)]


def read_turns(steps: list[str]) -> list[SearchTurn]:
    """One `SearchTurn` per step (one step per turn, as `agent.split_steps` cuts them)."""
    seen: dict[ShownDoc, None] = {}  # insertion-ordered set
    out = []
    for step in steps:
        turns = split_turns(step)
        text, observation = turns[0] if turns else ("", "")
        action = parse_action(text)
        docs = observation_docs(observation) if action.kind == "search" else []
        out.append(SearchTurn(kind=action.kind, content=action.content, text=text, docs=docs,
                              new=[d not in seen for d in docs], seen_before=list(seen)))
        seen.update(dict.fromkeys(docs))
    return out
