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

# `pytest -m "not slow"` runs the unit tests in under 2 minutes; `make test` runs everything.
# Slow tests are marked here, in one place, not in the test files: a test is slow when it needs
# a real Ray cluster or the session's tiny base model (built and seed-SFT'd, minutes on 2
# cores), directly or through another fixture, or when it is named below.
SLOW_FIXTURES = {"ray_cluster", "model_cache", "two_nodes"}
SLOW_FILES: set[str] = {"test_gpu_check.py",  # in-process CPU runs of the GPU check (~30 s)
                        "test_benchmark.py",  # make bench --quick: Ray runs at two sizes
                        "test_bench_dpo.py"}  # scripts/bench_dpo.py --quick: two Ray runs
SLOW_TESTS: set[str] = {"test_a_rebuild_gives_the_shipped_files",  # rebuilds a base model
                        "test_a_sigkilled_driver_leaves_no_ray_process_of_its_cluster"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES
                or getattr(item, "originalname", item.name) in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)

# Small enough for CI on 2 cores, large enough that the loop has something to learn.
SMALL_TASK = {"seed": 0, "levels": [2, 3, 4], "train_per_level": 8, "test_per_level": 4}
SMALL_OVERRIDES = [
    "rounds=1", "rollout.num_samples=4", "eval.num_samples=2", "eval.pass_k=[1,2]",
    "model.tiny.sft_steps=400", "model.tiny.sft_levels=[2,3]", "model.tiny.sft_queries_per_level={}",
    "train.epochs=1",
    "metrics.disabled=[embed_div]",
]


PLUGIN_CRITIC = """
from critics import Critique, StepVerdict


class RejectEverything:
    \"\"\"A researcher's critic kept outside the package: flags the last step of every sample.\"\"\"

    name = "reject-everything"

    def __init__(self, task=None, reason="not convinced"):
        self.reason = reason

    def critique(self, requests):
        out = []
        for r in requests:
            verdicts = [StepVerdict(ok=i < len(r.steps) - 1, score=0.0, feedback=self.reason)
                        for i in range(len(r.steps))]
            out.append(Critique(sample_id=r.sample_id, critic=self.name, verdicts=verdicts))
        return out
"""

ENTRY_POINT_PACKAGE = {
    "pyproject.toml": """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "selftrain-test-critic"
version = "0.0.1"

[project.entry-points."selftrain.critics"]
always-ok = "always_ok_critic:AlwaysOk"
""",
    "always_ok_critic.py": """
from critics import Critique, StepVerdict


class AlwaysOk:
    name = "always-ok"

    def __init__(self, task=None):
        pass

    def critique(self, requests):
        return [Critique(sample_id=r.sample_id, critic=self.name,
                         verdicts=[StepVerdict(ok=True, score=1.0) for _ in r.steps])
                for r in requests]
""",
}


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    """A folder outside the package with a `module:Class` critic and, pip-installed into it, a
    tiny package that registers a critic through the `selftrain.critics` entry point group."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("plugins")
    (root / "my_critics.py").write_text(PLUGIN_CRITIC)
    pkg = tmp_path_factory.mktemp("entry_point_pkg")
    for name, text in ENTRY_POINT_PACKAGE.items():
        (pkg / name).write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(root), str(pkg)], check=True)
    sys.path.insert(0, str(root))
    return root


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, plugin_dir):
    """A real local Ray cluster (4 logical CPUs on this 2-core machine, temp dir in tmp).
    Workers import from the repo, the tests and the plugin folder, as the driver does."""
    import ray

    from selftrain.cluster.ray_start import worker_env

    temp = tmp_path_factory.mktemp("ray")
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), str(plugin_dir)])
    ray.init(num_cpus=4, _temp_dir=str(temp), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path} | worker_env()})
    yield ray
    ray.shutdown()


def require_vllm() -> None:
    """Skip a vLLM test where vLLM is not installed; under scripts/test_vllm.sh
    (SELFTRAIN_REQUIRE_VLLM=1) a missing vLLM is a failure, not a skip."""
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        if os.environ.get("SELFTRAIN_REQUIRE_VLLM") == "1":
            raise
        pytest.skip(f"vLLM is not installed ({err}); scripts/test_vllm.sh runs it in .venv-vllm")


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


def assert_same_rounds(got: Path, want: Path, rounds, parquets) -> None:
    """Two run folders hold equal parquet files and metrics (timings aside) in these rounds."""
    import json

    import pandas as pd

    for k in rounds:
        for name in parquets:
            pd.testing.assert_frame_equal(pd.read_parquet(got / f"round_{k}" / name),
                                          pd.read_parquet(want / f"round_{k}" / name))
        a = json.loads((got / f"round_{k}" / "metrics.json").read_text())
        b = json.loads((want / f"round_{k}" / "metrics.json").read_text())
        strip = lambda m: {key: v for key, v in m.items() if not key.startswith("time/")}  # noqa: E731
        assert strip(a) == pytest.approx(strip(b))
