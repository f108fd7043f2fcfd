"""Ray actor groups: N copies of a worker class, placed by a placement group, fed in chunks.

Work is cut into fixed chunks before it is dispatched, and each chunk carries its own seed, so
which actor runs a chunk, and how often (after a crash), never changes its result. Ray restarts
a dead actor (`max_restarts`) and re-runs its in-flight call (`max_task_retries`); results are
stored by chunk index, so a redone chunk is neither lost nor duplicated. A chunk is a typed
work item (`selftrain.cluster.workers`); every worker takes it through one method, `run(chunk)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from selftrain.config import ResourceConfig
from selftrain.progress import StepProgress


class SchedulingError(RuntimeError):
    """The cluster cannot provide the resources a group asked for."""


class ActorGroup:
    """`resources.num_workers` actors of `cls`, kept alive for the whole run, each built with
    `args` (a dict: keyword arguments, so the roles are named)."""

    def __init__(self, name: str, cls: type, args: tuple | dict[str, Any], resources: ResourceConfig,
                 timeout_s: float = 120.0, max_restarts: int = 3) -> None:
        self.name = name
        self.pg = None
        bundle = {k: v for k, v in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)) if v > 0}
        options: dict[str, Any] = {
            "num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
            "max_restarts": max_restarts, "max_task_retries": max_restarts,
        }
        if bundle:  # an all-zero bundle is not placeable; such light workers float freely
            self.pg = placement_group([bundle] * resources.num_workers,
                                      strategy=resources.placement_strategy)
            if not self.pg.wait(timeout_seconds=timeout_s):
                remove_placement_group(self.pg)
                raise SchedulingError(
                    f"{name} group: the cluster could not place {resources.num_workers} x {bundle} "
                    f"(strategy {resources.placement_strategy}) within {timeout_s:.0f}s; the "
                    f"cluster has {_resources()}. Lower {name}.resources.num_workers / "
                    f"num_cpus / num_gpus, or add nodes."
                )
        remote = ray.remote(cls)
        self.actors = []
        try:
            for i in range(resources.num_workers):
                opts = dict(options)
                if self.pg is not None:
                    opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                        placement_group=self.pg, placement_group_bundle_index=i)
                actor = remote.options(**opts)
                self.actors.append(actor.remote(**args) if isinstance(args, dict) else
                                   actor.remote(*args))
            ray.get([a.info.remote() for a in self.actors], timeout=timeout_s + 600)
        except BaseException:  # a worker that cannot start must not keep its resources
            self.shutdown()
            raise

    def map(self, chunks: Sequence[Any], desc: str | None = None,
            each: Callable[[int, Any], Any] | None = None, depth: int = 2) -> list[Any]:
        """Run every chunk (`worker.run(chunk)`) over the actors; results in chunk order.

        Up to `depth` calls wait at each actor, so it starts its next chunk the moment one ends
        instead of idling through the round trip. `each(index, result)`, when given, runs on a
        chunk's result as it arrives (while the actors compute the next ones); its return value
        takes the result's place."""
        results: list[Any] = [None] * len(chunks)
        pending = list(range(len(chunks)))[::-1]
        in_flight: dict[Any, tuple[int, int]] = {}
        slots = [a for _ in range(max(1, depth)) for a in range(len(self.actors))]
        with StepProgress(desc or self.name, total=len(chunks)) as progress:
            while pending or in_flight:
                while pending and slots:
                    idx, actor = pending.pop(), slots.pop(0)
                    in_flight[self.actors[actor].run.remote(chunks[idx])] = (idx, actor)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    idx, actor = in_flight.pop(ref)
                    slots.append(actor)
                    result = ray.get(ref)
                    results[idx] = result if each is None else each(idx, result)
                    progress.advance()
        return results

    def call_all(self, method: str, *args: Any) -> list[Any]:
        """`method(*args)` on every actor (not chunked work: info, set-up)."""
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None


def _resources() -> str:
    """CPUs and GPUs of the cluster, in all and free (not Ray's internal bundle resources)."""
    total, free = ray.cluster_resources(), ray.available_resources()
    return ", ".join(f"{free.get(k, 0):g} of {total[k]:g} {k} free" for k in ("CPU", "GPU")
                     if k in total) or "no CPUs or GPUs"
