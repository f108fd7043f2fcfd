"""Generated tasks' levels: one seeded stream of distinct items per level, and the splits cut
from it.

Countdown and multihop draw queries the same way. Per level, a seeded RNG draws items and keeps
the distinct ones; an item's index in that stream is its id. The test split is the head of the
stream, the training pool the next `train_per_level` items, and the embedded base model's
demonstrations come after both, so the three never overlap and changing one size never changes
which item an id names. A task composes a `LevelStreams` with how to draw one item and how to
write an item as a `Query`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from selftrain.types import Query

T = TypeVar("T")

GIVE_UP_AFTER = 20_000
"""Draws in a row without a new item after which a level's stream counts as exhausted."""
DEMOS_PER_LEVEL = 200
"""Default demonstration queries per level (`demonstrations(extra_per_level=None)`)."""

Draw = Callable[[random.Random, int], "tuple[Hashable, T] | None"]
"""(rng, level) -> (key, item) of one draw, or None when the draw is not a valid item. Two draws
with the same key are the same item; only the first is kept."""
MakeQuery = Callable[[int, int, T], Query]
"""(level, index in the stream, item) -> the query."""


class LevelStreams(Generic[T]):
    """The per-level streams of one generated task, and its "test" / "train" splits.

    `task` names the task in RNG seeds and messages; `shortage` ends the message when a level
    has fewer distinct items than the splits need (say which settings to change).
    """

    def __init__(self, task: str, seed: int, levels: Sequence[int], test_per_level: int,
                 train_per_level: int, draw: Draw, make_query: MakeQuery, shortage: str) -> None:
        self.task = task
        self.seed = seed
        self.levels = tuple(sorted(set(levels)))
        self.test_per_level = test_per_level
        self.train_per_level = train_per_level
        self.draw = draw
        self.make_query = make_query
        self.shortage = shortage
        self._items: dict[int, list[T]] = {}
        self._state: dict[int, tuple[random.Random, set[Hashable], bool]] = {}
        self._splits: dict[str, list[Query]] = {}

    def describe(self) -> dict[str, Any]:
        """The parameters that fix the splits (part of the task's `describe`)."""
        return {"seed": self.seed, "levels": list(self.levels),
                "train_per_level": self.train_per_level, "test_per_level": self.test_per_level}

    def stream(self, level: int, count: int) -> list[T]:
        """The first `count` distinct items of `level` (fewer when the level runs out)."""
        if level not in self._items:
            self._items[level] = []
            self._state[level] = (random.Random(f"{self.task}:{self.seed}:{level}"), set(), False)
        items = self._items[level]
        rng, seen, exhausted = self._state[level]
        misses = 0
        while len(items) < count and not exhausted:
            drawn = self.draw(rng, level)
            if drawn is not None and drawn[0] not in seen:
                seen.add(drawn[0])
                items.append(drawn[1])
                misses = 0
            else:
                misses += 1
                exhausted = misses >= GIVE_UP_AFTER
        self._state[level] = (rng, seen, exhausted)
        return items[:count]

    def _slice(self, level: int, start: int, stop: int) -> list[Query]:
        items = self.stream(level, stop)
        return [self.make_query(level, i, items[i]) for i in range(start, min(stop, len(items)))]

    def queries(self, split: str) -> list[Query]:
        """The "train" pool or the "test" split: per level, a fixed slice of its stream."""
        if split not in ("train", "test"):
            raise ValueError(f"{self.task} has splits 'train' and 'test', not {split!r}")
        if split not in self._splits:
            start, size = ((0, self.test_per_level) if split == "test"
                           else (self.test_per_level, self.train_per_level))
            out = []
            for level in self.levels:
                got = len(self.stream(level, start + size))
                if got < start + size:
                    raise ValueError(f"{self.task} level {level} has only {got} distinct queries "
                                     f"{self.shortage}")
                out += self._slice(level, start, start + size)
            self._splits[split] = out
        return list(self._splits[split])

    def fresh(self, levels: Iterable[int], per_level: int | None) -> list[Query]:
        """`per_level` queries (default `DEMOS_PER_LEVEL`) of each of `levels` from after the
        test split and the pool, for demonstrations: neither is seen before self-training
        starts. Levels with fewer distinct queries give what they have."""
        count = DEMOS_PER_LEVEL if per_level is None else per_level
        start = self.test_per_level + self.train_per_level
        return [q for level in sorted(set(levels)) for q in self._slice(level, start, start + count)]
