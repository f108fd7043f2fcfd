"""Shared fixtures: one real local Ray cluster and one tiny real base model per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent

# Small enough for CI on 2 cores, large enough that the loop has something to learn.
SMALL_TASK = {"seed": 0, "levels": [2, 3, 4], "train_per_level": 8, "test_per_level": 4}
SMALL_OVERRIDES = [
    "rounds=1", "rollout.num_samples=4", "eval.num_samples=2", "eval.pass_k=[1,2]",
    "model.tiny.sft_steps=150", "model.tiny.sft_levels=[2,3]", "train.epochs=1",
    "metrics.disabled=[embed_div]",
]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster (4 logical CPUs on this 2-core machine, temp dir in tmp)."""
    import ray

    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=4, _temp_dir=str(temp), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """Where tiny base models are cached for the whole session (built once, reused)."""
    return tmp_path_factory.mktemp("models")


def small_config(tmp_path: Path, model_cache: Path, *extra: str, config: str = "countdown_rs.yaml"):
    """A real config from configs/, shrunk for tests."""
    import json

    from selftrain.config import load_config

    overrides = SMALL_OVERRIDES + [
        f"run_root={tmp_path / 'runs'}", f"model.cache_dir={model_cache}",
        f"task.args={json.dumps(SMALL_TASK)}", *extra,
    ]
    return load_config(REPO / "configs" / config, overrides)
