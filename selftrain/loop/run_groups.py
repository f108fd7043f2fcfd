"""The actor groups of one run: the training ranks, the rollout workers and, for arms with a
critic, the critic workers; started for the run, or taken over from the run before it in a
sequential compare (`selftrain.cluster.pool.GroupPool`) and reset to what a fresh start holds.

What a taken-over group is reset to: the rollout workers load the base weights and drop the
agent environment (built again on first use); the critic workers build a fresh task and critic
(a critic may keep state between calls); the training ranks reload the base weights and redo
their warm-up update, as a fresh group does at its start. Chunks carry their own seeds, and a
finetune its own, so a run gives the same files on taken-over groups as on fresh ones
(tests/test_startup.py). A group that fails its reset is shut down and started afresh.
"""

from __future__ import annotations

import logging
from typing import Any

from selftrain.arms.arm import Arm
from selftrain.cluster.pool import GroupPool, group_key
from selftrain.config import Config
from selftrain.runfolder.storage import Storage

log = logging.getLogger("selftrain")


def group_keys(cfg: Config, arm: Arm, base: str) -> dict[str, str]:
    """name -> key of everything each group of the run is built from."""
    where = [cfg.run_root, cfg.staging_dir]
    keys = {"train": group_key("train", train=cfg.train, base=base, storage=where),
            "rollout": group_key("rollout", base=base, rollout=_rollout_build(cfg),
                                 task=cfg.task, storage=where)}
    if arm.needs_critic:
        keys["critic"] = group_key("critic", critic=cfg.critic, task=cfg.task)
    return keys


def _rollout_build(cfg: Config) -> dict[str, Any]:
    r = cfg.rollout
    return {"backend": r.backend, "dtype": r.dtype, "resources": r.resources,
            "tensor_parallel_size": r.tensor_parallel_size,
            "gpu_memory_utilization": r.gpu_memory_utilization}


def start_groups(cfg: Config, arm: Arm, base: str, storage: Storage, groups: dict[str, Any],
                 pool: GroupPool | None = None) -> list[str]:
    """Every group of the run into `groups` by name (so the caller shuts down whatever started,
    also when a later one fails); the training ranks first: their start-up load (imports, model,
    one step) then overlaps the rollout workers' start and round 0. Returns the names of the
    groups taken over from `pool`."""
    keys = group_keys(cfg, arm, base)
    found = pool.claim(keys) if pool is not None else {}
    taken = []
    for name in keys:
        group = found.get(name)
        if group is not None and _reset(name, group, base):
            taken.append(name)
        else:
            group = _start(name, cfg, base, storage)
        groups[name] = group
    log.info("actor groups: %s", "; ".join(_described(name, groups[name], name in taken)
                                            for name in keys))
    return taken


def _described(name: str, group: Any, taken: bool) -> str:
    """`rollout taken over (pids 123)`: the run's log says which processes served it (the
    training ranks' pids are not asked for: they are busy loading, not waited for)."""
    how = "taken over from the previous run" if taken else "started"
    if name == "train":
        return f"{name} {how}"
    return f"{name} {how} (pids {', '.join(str(i['pid']) for i in group.call_all('info'))})"


def release_groups(groups: dict[str, Any], pool: GroupPool | None,
                   kept: dict[str, str]) -> None:
    """The groups named in `kept` (name -> key: a run that finished) into `pool` for the next
    run; the others shut down (a failed or interrupted run's groups may be mid-work)."""
    for name, group in groups.items():
        if pool is not None and name in kept:
            pool.keep(kept[name], group)
        else:
            group.shutdown()
    groups.clear()


def _reset(name: str, group: Any, base: str) -> bool:
    """Back to a fresh start's state; False (and shut down) when an actor cannot be reset."""
    try:
        if name == "train":
            group.rewarm(base)
        else:
            group.call_all("reset")
        return True
    except Exception as err:  # a dead actor, a failing rebuild: start the group afresh
        log.warning("the %s group could not be taken over (%s); starting a fresh one", name, err)
        group.shutdown()
        return False


def _start(name: str, cfg: Config, base: str, storage: Storage) -> Any:
    from selftrain.cluster.groups import ActorGroup
    from selftrain.cluster.trainer import TrainerGroup
    from selftrain.cluster.workers import CriticWorker, RolloutWorker

    if name == "train":
        return TrainerGroup(cfg.train, storage, timeout_s=cfg.ray.schedule_timeout_s,
                            warm_with=base)
    if name == "rollout":
        r = cfg.rollout
        backend_args = {"dtype": r.dtype, "tensor_parallel_size": r.tensor_parallel_size,
                        "gpu_memory_utilization": r.gpu_memory_utilization}
        return ActorGroup(
            "rollout", RolloutWorker,
            dict(model_path=base, backend=r.backend, backend_args=backend_args,
                 num_cpus=r.resources.num_cpus, task=cfg.task, storage=storage),
            r.resources, timeout_s=cfg.ray.schedule_timeout_s)
    c = cfg.critic
    return ActorGroup("critic", CriticWorker,
                      dict(critic=c, task=cfg.task, num_cpus=c.resources.num_cpus),
                      c.resources, timeout_s=cfg.ray.schedule_timeout_s)
