"""Actor groups handed from one run to the next in a sequential compare.

Starting a group costs a worker process, its imports (torch, transformers) and a model load:
seconds per group, paid again by every run of a compare although its runs share model, backend
and resources. `GroupPool` keeps the groups of a finished run, each under a key of everything
that built it (the actor class's constructor arguments and its resources), and hands a group to
the next run only under the very same key: an actor Ray restarts mid-run is rebuilt from those
arguments, so it comes back as the run would have built it. The run resets what it takes to
what a fresh start holds (`selftrain.loop.run_groups`). Groups the next run does not take are
shut down before it starts its own, so idle groups never hold resources a new one needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Protocol


class Group(Protocol):
    def shutdown(self) -> None: ...


def group_key(name: str, **built_from: Any) -> str:
    """A stable key of what built a group: dataclasses by their fields, everything else by
    its JSON form (keys sorted), so equal settings give equal keys across runs."""
    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        return str(value)

    return json.dumps({"group": name, **built_from}, sort_keys=True, default=plain)


def holds_resources(group: Group) -> bool:
    """Whether the group's placement group reserves CPUs or GPUs (an `ActorGroup` whose bundle
    is all zero has none); a group of another kind counts as holding them."""
    return getattr(group, "pg", True) is not None


@dataclass
class GroupPool:
    """Idle groups by key, between the runs of one sequential compare."""

    idle: dict[str, Group] = field(default_factory=dict)
    taken: int = 0
    """Groups handed over so far (a run that takes its rollout and training groups: 2)."""

    def claim(self, keys: dict[str, str]) -> dict[str, Group]:
        """The idle groups under `keys` (name -> key), by name; every other idle group that
        holds resources is shut down now, before the run starts the groups it did not find (one
        that holds none, such as a critic at num_cpus 0, waits for a later run)."""
        wanted = {key: name for name, key in keys.items()}
        found: dict[str, Group] = {}
        for key, group in list(self.idle.items()):
            if key in wanted:
                found[wanted[key]] = self.idle.pop(key)
            elif holds_resources(group):
                self.idle.pop(key).shutdown()
        self.taken += len(found)
        return found

    def keep(self, key: str, group: Group) -> None:
        """A finished run's group, for the next run (one group per key)."""
        old = self.idle.pop(key, None)
        if old is not None and old is not group:
            old.shutdown()
        self.idle[key] = group

    def close(self) -> None:
        """Shut every idle group down (the compare's end, or its failure)."""
        for group in self.idle.values():
            group.shutdown()
        self.idle.clear()
