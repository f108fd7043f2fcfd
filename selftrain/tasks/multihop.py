"""Multihop: questions over a synthetic world that a search agent answers hop by hop.

The embedded search-agent task. A seeded world of fictional people, companies and cities,
each with a few functional relations, is rendered as one short document per entity (written
to a JSONL corpus and indexed with BM25). A question composes 1 to 4 relations from a named
entity; difficulty = hops = the searches a gold trajectory needs, since each document states
only its own entity's relations. Names are short made-up words whose tokens are unique in the
world, so searching an entity's name retrieves its document first (the tests check this for
every entity).

Prompt:      "Q: birthplace of founder of employer of Zorvan Keld?\\n"
Completion:  "<search> Zorvan Keld </search>\\n<information>Doc 1(Title: "Zorvan Keld") Zorvan Keld
              was born in Lumo and works for Kelvar.\\nDoc 2(...) ...</information>\\n
              <search> Kelvar </search>\\n<information>...</information>\\n
              <search> Mira Tov </search>\\n<information>...</information>\\n<answer> Dava </answer>"
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftrain import agent
from selftrain.agent import AgentEnv
from selftrain.metrics.search import search_figures
from selftrain.retrieval import BM25Retriever, Retriever, make_retriever
from selftrain.tasks.base import Demonstration
from selftrain.tasks.levels import LevelStreams
from selftrain.tasks.registry import register_task
from selftrain.types import Query

WORLD_VERSION = 2
"""Bump when the world or document rendering changes: it keys the corpus file and the embedded
base model. 2: titles in observations are quoted, as Search-R1 writes them."""

RELATIONS: dict[str, tuple[str, str, str]] = {
    # relation: (subject kind, object kind, noun used in questions)
    "born_in": ("person", "city", "birthplace"),
    "works_for": ("person", "company", "employer"),
    "founded_by": ("company", "person", "founder"),
    "located_in": ("company", "city", "city"),
    "mayor": ("city", "person", "mayor"),
}
_FROM: dict[str, list[str]] = {}
for _rel, (_subject, _, _) in RELATIONS.items():
    _FROM.setdefault(_subject, []).append(_rel)

_ONSETS = "b d f g h k l m n p r s t v z br dr kr st tr sk".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "", "n", "r", "l", "s", "k", "m", "ld", "rn"]
_RESERVED = {"a", "an", "the", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
             "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "their", "then",
             "there", "these", "they", "this", "to", "was", "will", "with", "company", "city",
             "mayor", "born", "works", "founded", "its", "whose"}
"""Words a name must not be: BM25 stopwords, articles (dropped by answer normalisation) and the
words of the document template (a name must be found by its own tokens only)."""


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class Entity:
    id: str
    kind: str
    """person, company or city."""
    name: str
    relations: dict[str, str]
    """relation -> id of the related entity."""


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables)).capitalize()


def _fresh_words(rng: random.Random, count: int, taken: set[str], syllables: Sequence[int]
                 ) -> list[str]:
    """`count` new words of 3-7 letters, none in `taken` or `_RESERVED` (lower-cased)."""
    out = []
    while len(out) < count:
        w = _word(rng, rng.choice(syllables))
        if 3 <= len(w) <= 7 and w.lower() not in taken and w.lower() not in _RESERVED:
            taken.add(w.lower())
            out.append(w)
    return out


def build_world(seed: int, num_people: int, num_companies: int, num_cities: int
                ) -> dict[str, Entity]:
    """The seeded world, by entity id. Every name token appears in one entity's name only."""
    rng = random.Random(f"multihop-world:{seed}")
    taken: set[str] = set()
    firsts = _fresh_words(rng, num_people, taken, (2,))
    lasts = _fresh_words(rng, num_people, taken, (1, 2))
    companies = _fresh_words(rng, num_companies, taken, (2, 3))
    cities = _fresh_words(rng, num_cities, taken, (2,))
    person_ids = [f"per-{i:03d}" for i in range(num_people)]
    company_ids = [f"com-{i:03d}" for i in range(num_companies)]
    city_ids = [f"cty-{i:03d}" for i in range(num_cities)]
    world: dict[str, Entity] = {}
    for pid, first, last in zip(person_ids, firsts, lasts):
        world[pid] = Entity(pid, "person", f"{first} {last}",
                            {"born_in": rng.choice(city_ids), "works_for": rng.choice(company_ids)})
    for cid, name in zip(company_ids, companies):
        world[cid] = Entity(cid, "company", name,
                            {"located_in": rng.choice(city_ids), "founded_by": rng.choice(person_ids)})
    for tid, name in zip(city_ids, cities):
        world[tid] = Entity(tid, "city", name, {"mayor": rng.choice(person_ids)})
    return world


def render_doc(entity: Entity, world: dict[str, Entity]) -> str:
    """The entity's document: its own relations in one sentence, its name written out (so BM25
    ranks it first for that name over documents that only mention it)."""
    name_of = {rel: world[eid].name for rel, eid in entity.relations.items()}
    if entity.kind == "person":
        return f"{entity.name} was born in {name_of['born_in']} and works for {name_of['works_for']}."
    if entity.kind == "company":
        return (f"{entity.name} is a company in {name_of['located_in']}, founded by "
                f"{name_of['founded_by']}.")
    return f"{entity.name} is a city; its mayor is {name_of['mayor']}."


# ---------------------------------------------------------------- the task


@register_task("multihop")
class MultihopTask:
    """Multi-hop questions over the synthetic world; difficulty = hops (searches needed).

    Like countdown, each level has one deterministic stream of distinct questions
    (`LevelStreams`): the test split is its head, the training pool the next `train_per_level`,
    demonstrations come after, so the three never overlap. The corpus is written once to
    `cache_dir` (default ~/.cache/selftrain/multihop, node-local: any worker can rebuild it bit
    for bit) under a name keyed by the world's parameters; its BM25 index is cached beside it. `retriever` (a
    `make_retriever` spec, e.g. {"kind": "http", "url": ...}) replaces the local BM25, for a
    shared `selftrain serve-retriever` over this task's corpus. `match` is how an answer is
    checked: "em" (Search-R1's exact match) or "subem" (a gold answer inside the answer).
    """

    name = "multihop"
    stop: tuple[str, ...] = agent.STOP

    def __init__(
        self,
        seed: int = 0,
        levels: Sequence[int] = (1, 2, 3, 4),
        train_per_level: int = 100,
        test_per_level: int = 25,
        topk: int = 2,
        max_turns: int = 6,
        match: agent.Match = "em",
        num_people: int = 150,
        num_companies: int = 50,
        num_cities: int = 50,
        cache_dir: str | None = None,
        retriever: dict[str, Any] | None = None,
    ) -> None:
        if not levels or min(levels) < 1:
            raise ValueError(f"multihop levels are hop counts >= 1, got {levels!r}")
        if match not in agent.MATCHES:
            raise ValueError(f"multihop match must be one of {', '.join(agent.MATCHES)}, got "
                             f"{match!r}")
        if min(num_people, num_companies, num_cities) < 2:
            raise ValueError("multihop needs at least 2 people, companies and cities")
        if max_turns < max(levels) + 1:
            raise ValueError(f"max_turns={max_turns} leaves no room to answer a "
                             f"{max(levels)}-hop question (needs {max(levels)} searches + 1)")
        self.seed = seed
        self.train_per_level = train_per_level
        self.test_per_level = test_per_level
        self.topk = topk
        self.max_turns = max_turns
        self.sizes = {"num_people": num_people, "num_companies": num_companies,
                      "num_cities": num_cities}
        root = cache_dir or os.path.join("~", ".cache", "selftrain", "multihop")
        self.cache_dir = Path(root).expanduser().resolve()
        self.retriever_spec = retriever
        self.match = match
        self.world = build_world(seed, num_people, num_companies, num_cities)
        self._ids = sorted(self.world)
        self.streams = LevelStreams(
            "multihop", seed, levels, test_per_level, train_per_level, self._candidate,
            self._query, shortage=(f"in a world of {self.sizes}; lower train_per_level/"
                                   f"test_per_level or enlarge the world"))
        self.levels = self.streams.levels
        self._retriever: Retriever | None = None

    # -- corpus and environment

    def corpus_path(self) -> Path:
        """The world's JSONL corpus ({"id", "title", "text"} per entity), written if missing."""
        blob = json.dumps({"v": WORLD_VERSION, "seed": self.seed, **self.sizes}, sort_keys=True)
        path = self.cache_dir / f"multihop-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.jsonl"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"id": e.id, "title": e.name, "text": render_doc(e, self.world)})
                     for e in (self.world[i] for i in self._ids)]
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(path)  # atomic; concurrent writers write identical bytes
        return path

    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = (make_retriever(self.retriever_spec) if self.retriever_spec
                               else BM25Retriever(self.corpus_path()))
        return self._retriever

    def env(self) -> AgentEnv:
        """What the rollout worker drives `agent.run_episodes` with."""
        return AgentEnv(retriever=self.retriever(), max_turns=self.max_turns, topk=self.topk)

    # -- queries

    def _candidate(self, rng: random.Random, level: int) -> tuple[Any, Any] | None:
        """A start entity and a `level`-step relation path from it; kept when the path never
        revisits an entity, so every hop needs a document not seen before."""
        start = rng.choice(self._ids)
        path, chain = [], [start]
        for _ in range(level):
            rel = rng.choice(_FROM[self.world[chain[-1]].kind])
            path.append(rel)
            chain.append(self.world[chain[-1]].relations[rel])
        key = (start, tuple(path))
        return (key, key) if len(set(chain)) == len(chain) else None

    def _query(self, level: int, index: int, item: tuple[str, tuple[str, ...]]) -> Query:
        start, path = item
        chain = [start]
        for rel in path:
            chain.append(self.world[chain[-1]].relations[rel])
        names = [self.world[e].name for e in chain]
        nouns = " of ".join(RELATIONS[rel][2] for rel in reversed(path))
        question = f"{nouns} of {names[0]}?"
        return Query(
            query_id=f"mh-L{level}-{index:04d}",
            difficulty=level,
            prompt=f"Q: {question}\n",
            data={"question": question, "relations": list(path), "chain": chain[:-1],
                  "chain_names": names[:-1], "answer": names[-1], "golden_answers": [names[-1]]},
        )

    def queries(self, split: str) -> list[Query]:
        """The "train" pool or the "test" split: per level, a fixed slice of its stream."""
        return self.streams.queries(split)

    # -- reading completions: as every search-agent task does (agent.py, metrics/search.py)

    split_steps = staticmethod(agent.split_steps)
    extract_answer = staticmethod(agent.extract_answer)
    solution_key = staticmethod(agent.solution_key)
    extra_metrics = staticmethod(search_figures)

    def is_correct(self, query: Query, completion: str) -> bool:
        """The last <answer> against the gold entity name, by `match` (Search-R1's scoring)."""
        return agent.answer_matches(self.extract_answer(completion), query.data["golden_answers"],
                                    self.match)

    # -- demonstrations

    def gold_trajectories(self, queries: Sequence[Query]) -> list[agent.Trajectory]:
        """Per query: one search per hop for the entity's name, then the answer, with the
        observations the retriever really returns (one batched call per hop). Actions are
        spaced as in Search-R1's prompt (`<search> query </search>`): a name then reads the
        same inside an action as in a question or a document, which a subword tokenizer needs
        to make copying it a copy of the same tokens."""
        turns = [[f"<search> {name} </search>" for name in q.data["chain_names"]]
                 + [f"<answer> {q.data['answer']} </answer>"] for q in queries]
        return agent.replay([q.prompt for q in queries], turns, self.retriever(), self.topk)

    def reference_solutions(self, query: Query) -> list[str]:
        """The gold trajectory's completion (the path is unique: one search per hop)."""
        return [self.gold_trajectories([query])[0].completion]

    def demonstrations(self, levels: Sequence[int], per_query: int = 1, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """Gold trajectories of `extra_per_level` fresh questions per level
        (`LevelStreams.fresh`), observations masked: a base model that memorised the pool's
        gold trajectories would make rejection sampling look easy. Each question has one gold
        trajectory, so `per_query` and `seed` change nothing."""
        del per_query, seed
        return [Demonstration(t.prompt, t.completion, tuple(t.masked_spans))
                for t in self.gold_trajectories(self.streams.fresh(levels, extra_per_level))]

    def describe(self) -> dict[str, Any]:
        """The parameters that fix this task's queries and observations."""
        return {"name": self.name, **self.streams.describe(), "topk": self.topk,
                "max_turns": self.max_turns, "world_version": WORLD_VERSION, **self.sizes}
