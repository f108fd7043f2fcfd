"""`ActorGroup.map` with calls queued at each actor: results in chunk order, `each` applied to
every chunk's result exactly once, as it arrives."""

from __future__ import annotations

import time

from selftrain.cluster.groups import ActorGroup
from selftrain.config import ResourceConfig


class Echo:
    """Returns its chunk after a pause that varies by chunk, so chunks finish out of order."""

    def info(self) -> str:
        return "echo"

    def run(self, chunk: int) -> list[int]:
        time.sleep(0.02 * (chunk % 3))
        return [chunk, chunk * chunk]


def test_map_keeps_chunk_order_and_applies_each_once(ray_cluster):
    group = ActorGroup("echo", Echo, {}, ResourceConfig(num_workers=2, num_cpus=0))
    try:
        seen: list[int] = []

        def each(idx: int, result: list[int]) -> int:
            seen.append(idx)
            assert result == [idx, idx * idx]
            return result[1] + 1

        for depth in (1, 2, 3):
            seen.clear()
            out = group.map(list(range(9)), desc="echo", each=each, depth=depth)
            assert out == [i * i + 1 for i in range(9)]
            assert sorted(seen) == list(range(9))
        assert group.map([5, 1]) == [[5, 25], [1, 1]]
    finally:
        group.shutdown()
