"""Joining or starting the Ray cluster a run's actor groups live on.

Below the driver (`loop`, `run`) and the launcher, which all start Ray the same way: workers get
the driver's import path, so `critic.path` and `task.path` modules resolve in them too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray

from selftrain.cluster.ray_reaper import watch_local_cluster
from selftrain.config import Config


def worker_env() -> dict[str, str]:
    """Environment for every Ray worker of a run (the user's own settings win): tokenizers'
    own thread pool would fight the actors' torch threads, and progress bars of model loading
    and saving are not the user's business."""
    defaults = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    return {key: os.environ.get(key, value) for key, value in defaults.items()}


def start_ray(cfg: Config, temp_dir: Path) -> None:
    """Connect to `ray.address` / RAY_ADDRESS, or start a local cluster with its temp dir in
    the run root. Workers get the driver's import path, so `critic.path` modules resolve."""
    if ray.is_initialized():
        return
    # Ray's notice that a local cluster uses token authentication is not the user's business
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} | worker_env()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                 logging_level="WARNING")
        return
    temp_dir = temp_dir.resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    # the cluster this driver starts ends with it, also when the driver is SIGKILLed, even
    # while the cluster is still starting
    watch_local_cluster(temp_dir)
    ray.init(num_cpus=cfg.ray.num_cpus, _temp_dir=str(temp_dir), include_dashboard=False,
             runtime_env={"env_vars": env}, log_to_driver=False,
             configure_logging=True, logging_level="WARNING")
