"""Lexicon lines: an embedded open-ended task whose passing outputs are many, with a knob for how
many (`breadth`). It is the broad pole of the narrow-versus-broad experiment (configs/flip.yaml);
countdown is the narrow one.

A query names a topic and k letters; the completion is one line of k words, the i-th starting
with the i-th letter, every word from the topic's part of the lexicon, none repeated. The score
is the share of constraints met (per word: the letter, the topic, not a repeat; and exactly k
words), and a line passes when it meets them all (`pass_threshold`, 1.0 by default).

`breadth` is how many lexicon words fit each (topic, letter) cell: 1 leaves one passing line per
query (a narrow basin, like a program that must be right), 8 leaves 8^k (a broad region). The
lexicon is made of pronounceable pseudo-words drawn from a fixed seed, so that it can be any
size, every word belongs to exactly one cell, and a character model learns it from the
demonstrations alone.

`distinct_weight` w switches on a distinctiveness term, which needs the other samples of the
same prompt: `score_batch` gives each line quality x ((1 - w) + w x rarity), rarity = the mean
over its words of the share of the prompt's *other* samples in the same call that do not use
the word (1 for a call of one sample). So a perfect line whose words nobody else used scores 1,
and one that every other sample repeats scores 1 - w (so at breadth 1, where every right line is
the same line, a threshold above 1 - w is refused). The loop scores each generate and evaluate
call one query at a time (`selftrain.tasks.graded.scores`), so "the round's own samples" are
those of one call: the first pass, or one wave.

Prompt:      "sea: b k\n"
Completion:  "bavo kemi\n"   (the loop appends EOS)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from selftrain.tasks.base import Demonstration
from selftrain.tasks.levels import LevelStreams
from selftrain.tasks.registry import register_task
from selftrain.types import Query

TOPICS = ("sea", "farm", "city")
LETTERS = "bdklmst"
MAX_BREADTH = 16
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


def build_lexicon(seed: int = 0, breadth: int = MAX_BREADTH) -> dict[tuple[str, str], list[str]]:
    """(topic, letter) -> `breadth` distinct four-letter pseudo-words starting with the letter
    (letter, vowel, consonant, vowel); no word is in two cells. The first `b` words of a cell
    are the same for every breadth >= b, so a broader lexicon only adds words."""
    rng = random.Random(f"lexicon:{seed}")
    taken: set[str] = set()
    cells: dict[tuple[str, str], list[str]] = {(t, c): [] for t in TOPICS for c in LETTERS}
    for _ in range(breadth):  # round-robin over cells: prefixes stay fixed as breadth grows
        for (_, letter), words in cells.items():
            while True:
                word = letter + rng.choice(_VOWELS) + rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
                if word not in taken:
                    break
            taken.add(word)
            words.append(word)
    return cells


@register_task("lexicon_lines")
class LexiconLinesTask:
    """Lines of k lexicon words under constraints; difficulty = k (words per line)."""

    name = "lexicon_lines"
    stop: tuple[str, ...] = ("\n",)

    def __init__(self, levels: Sequence[int] = (2, 3), seed: int = 0, breadth: int = 4,
                 distinct_weight: float = 0.0, pass_threshold: float = 1.0,
                 train_per_level: int = 60, test_per_level: int = 25) -> None:
        if not 1 <= breadth <= MAX_BREADTH:
            raise ValueError(f"lexicon_lines breadth must be 1..{MAX_BREADTH}, got {breadth}")
        if not levels or min(levels) < 1 or max(levels) > len(LETTERS):
            raise ValueError(f"lexicon_lines levels are words per line, 1..{len(LETTERS)}; got {levels!r}")
        if not 0.0 <= distinct_weight <= 1.0 or not 0.0 < pass_threshold <= 1.0:
            raise ValueError(f"lexicon_lines needs distinct_weight in [0, 1] and pass_threshold in "
                             f"(0, 1], got {distinct_weight} and {pass_threshold}")
        reachable = self.reachable_score(breadth, distinct_weight)
        if pass_threshold > reachable + 1e-9:
            raise ValueError(
                f"key task.args.pass_threshold {pass_threshold} is above {reachable:g}, what a "
                f"right line scores at breadth 1 with distinct_weight {distinct_weight} whenever "
                f"another sample of its prompt is right too (it is the same line): set "
                f"pass_threshold <= {reachable:g}")
        self.seed, self.breadth = seed, breadth
        self.distinct_weight, self._threshold = distinct_weight, pass_threshold
        full = build_lexicon(seed)
        self.lexicon = {cell: words[:breadth] for cell, words in full.items()}
        self.topic_of = {w: topic for (topic, _), words in self.lexicon.items() for w in words}
        self.streams = LevelStreams(
            "lexicon_lines", seed, levels, test_per_level, train_per_level, self._candidate,
            self._query, shortage="; lower train_per_level/test_per_level")
        self.levels = self.streams.levels

    @property
    def pass_threshold(self) -> float:
        return self._threshold

    @staticmethod
    def reachable_score(breadth: int, distinct_weight: float) -> float:
        """The most every right line of a call can score once two or more are right. At
        breadth 1 they are all the one passing line, so each word's rarity is 0 and the score
        1 - distinct_weight: a higher threshold passes only a policy that gets a prompt right at
        most once per call (the narrow pole's distinct arm before this check). At breadth >= 2
        two right lines can share no word, so 1."""
        return 1.0 - distinct_weight if breadth == 1 else 1.0

    # -- queries

    def _candidate(self, rng: random.Random, level: int) -> tuple[Any, tuple[str, str]]:
        topic = rng.choice(TOPICS)
        letters = "".join(rng.sample(LETTERS, level))
        return (topic, letters), (topic, letters)

    def _query(self, level: int, index: int, item: tuple[str, str]) -> Query:
        topic, letters = item
        return Query(query_id=f"ll-L{level}-{index:04d}", difficulty=level,
                     prompt=f"{topic}: {' '.join(letters)}\n",
                     data={"topic": topic, "letters": letters})

    def queries(self, split: str) -> list[Query]:
        return self.streams.queries(split)

    # -- reading and scoring completions

    def split_steps(self, completion: str) -> list[str]:
        """One step per word of the first line."""
        return completion.strip().split("\n")[0].split()

    def extract_answer(self, completion: str) -> str | None:
        """The line's words joined by one space; None for an empty line."""
        return " ".join(self.split_steps(completion)) or None

    def quality(self, query: Query, completion: str) -> float:
        """Share of the 3k + 1 constraints met: per word slot i, word i starts with letter i,
        is in the topic's lexicon, and repeats no earlier word; and the line has k words."""
        letters, topic = query.data["letters"], query.data["topic"]
        words = self.split_steps(completion)
        met = int(len(words) == len(letters))
        for i, letter in enumerate(letters):
            if i < len(words):
                w = words[i]
                met += w.startswith(letter) + (self.topic_of.get(w) == topic) + (w not in words[:i])
        return met / (3 * len(letters) + 1)

    def score(self, query: Query, completion: str) -> float:
        """The score of a line scored alone (rarity 1 when distinctiveness is on)."""
        return self.score_batch(query, [completion])[0]

    def score_batch(self, query: Query, completions: list[str]) -> list[float]:
        """Scores of one call's samples of `query`, with the distinctiveness term when on."""
        quality = [self.quality(query, c) for c in completions]
        if self.distinct_weight == 0.0:
            return quality
        words = [set(self.split_steps(c)) for c in completions]
        used = Counter(w for ws in words for w in ws)
        others = len(completions) - 1
        out = []
        for q, ws in zip(quality, words):
            rarity = (sum(1 - (used[w] - 1) / others for w in ws) / len(ws)
                      if others and ws else 1.0)
            out.append(q * (1 - self.distinct_weight + self.distinct_weight * rarity))
        return out

    def is_correct(self, query: Query, completion: str) -> bool:
        """Passing: the line's score alone reaches `pass_threshold`."""
        return self.score(query, completion) >= self._threshold

    def solution_key(self, steps: list[str]) -> str:
        """Two lines are one solution when they have the same words in the same order."""
        return " ".join(steps)

    # -- demonstrations

    def reference_solutions(self, query: Query, k: int = 4, seed: int = 0) -> list[str]:
        """Up to `k` distinct passing lines, words drawn at random from each cell."""
        rng = random.Random(f"lexicon_lines:{self.seed}:{seed}:{query.query_id}")
        cells = [self.lexicon[(query.data["topic"], c)] for c in query.data["letters"]]
        total = 1
        for cell in cells:
            total *= len(cell)
        lines: list[str] = []
        for _ in range(8 * k):
            if len(lines) >= min(k, total):
                break
            line = " ".join(rng.choice(cell) for cell in cells) + "\n"
            if line not in lines:
                lines.append(line)
        return lines

    def demonstrations(self, levels: Sequence[int], per_query: int = 2, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """`per_query` random passing lines for each of `extra_per_level` fresh queries per
        level (neither test nor pool)."""
        return [Demonstration(q.prompt, line) for q in self.streams.fresh(levels, extra_per_level)
                for line in self.reference_solutions(q, k=per_query, seed=seed)]

    def describe(self) -> dict[str, Any]:
        """What fixes the queries and demonstrations (the tiny model's cache key). The
        distinctiveness weight and the threshold change no demonstration, so they are left out
        and every distinct_weight shares one base model."""
        return {"name": self.name, **self.streams.describe(), "breadth": self.breadth,
                "letters": LETTERS, "topics": list(TOPICS)}
