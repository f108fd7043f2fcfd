"""Tasks plug in as critics do: `task.path` to a module of the working directory, an entry point
of an installed package, or a registered name; a bad one stops before Ray starts in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, small_config

from selftrain.config import ConfigError, dump_yaml, load_config
from selftrain.loop.checks import preflight
from selftrain.tasks import TASKS, TaskLoadError, build_task, make_task


def readme_block(needle: str) -> str:
    """The README's python block that holds `needle`, verbatim."""
    readme = (REPO / "README.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if needle in b)


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """A folder on sys.path whose modules are forgotten after the test."""
    folder = tmp_path / "importable"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(folder) in sys.modules[name].__file__:
            del sys.modules[name]


def test_the_readme_task_is_built_by_path_and_checks_answers(importable):
    (importable / "readme_sum.py").write_text(readme_block("class SumTask"))
    task = build_task(None, "readme_sum:SumTask", {"n": 4})
    pool, test = task.queries("train"), task.queries("test")
    assert len(pool) == len(test) == 4 and not {q.query_id for q in pool} & {q.query_id for q in test}
    q = pool[0]
    a, b = map(int, q.prompt.rstrip("=").split("+"))
    assert task.is_correct(q, f"{a + b}") and not task.is_correct(q, f"{a + b + 1}")
    assert task.extract_answer(f"{a}+{b}\n{a + b}") == str(a + b)


def test_a_task_from_an_installed_package_is_found_by_entry_point(importable, tmp_path):
    """An installed distribution (its dist-info folder on sys.path) that names the README's task
    in the `selftrain.tasks` group: `task.name: sum` finds it, and the preflight passes."""
    (importable / "sum_task_pkg.py").write_text(readme_block("class SumTask"))
    dist = importable / "sum_task_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sum-task-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[selftrain.tasks]\nsum = sum_task_pkg:SumTask\n")
    assert "sum" in TASKS.names() and "countdown" in TASKS.names()
    task = make_task("sum", n=3)
    assert type(task).__module__ == "sum_task_pkg" and len(task.queries("test")) == 3
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml",
                      ["task.name=sum", "task.args={n: 3}", f"run_root={tmp_path / 'runs'}"])
    preflight(cfg, "run")


BROKEN = {
    "broken_import.py": "import no_such_module_anywhere\n\nclass Task:\n    pass\n",
    "half_task.py": "class Half:\n    name = 'half'\n    stop = ()\n\n"
                    "    def __init__(self, **args):\n        pass\n\n"
                    "    def queries(self, split):\n        return []\n",
}


@pytest.mark.parametrize("override, needle", [
    ("task.name=nope", "unknown task 'nope'; known tasks: code, code_data, countdown, lexicon_lines, math, multihop, open_ended, searchqa"),
    ("task.path=broken_import:Task", "task.path 'broken_import:Task': importing broken_import "
                                     "failed: ModuleNotFoundError"),
    ("task.path=half_task:Half", "task 'half_task:Half': Half is not a task: it lacks "
                                 "split_steps, extract_answer, is_correct"),
    ("task.path=half_task", "task.path 'half_task' must look like 'my_pkg.my_module:MyTask'"),
])
def test_a_bad_task_stops_before_ray_starts_in_one_line(tmp_path, override, needle):
    work = tmp_path / "work"
    work.mkdir()
    for name, text in BROKEN.items():
        (work / name).write_text(text)
    runs = tmp_path / "runs"
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml", [f"run_root={runs}", override])
    config = tmp_path / "config.yaml"
    config.write_text(dump_yaml(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-m", "selftrain.cli", "run", str(config)], cwd=work,
                          env=env | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
    assert not (runs / ".ray").exists() and not (runs / cfg.experiment).exists()


def test_a_bad_task_is_a_task_load_error_in_process():
    with pytest.raises(TaskLoadError, match="could not be built with task.args"):
        make_task("countdown", no_such_arg=1)
    cfg = load_config(REPO / "configs" / "countdown_rs.yaml", ["task.name=nope"])
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        preflight(cfg, "run")


def test_the_readme_task_runs_end_to_end_from_the_working_directory(tmp_path, ray_cluster,
                                                                      model_cache):
    """The README's SumTask and LengthCritic, verbatim, in the working directory; `selftrain
    run` with `task.path` and a critique arm, so the rollout and critic workers build the task
    from the driver's spec. The base policy is the tiny countdown model (any text model will do)."""
    from selftrain.models.source import resolve_model

    countdown = small_config(tmp_path / "base", model_cache)
    base = resolve_model(countdown, make_task(countdown.task.name, **countdown.task.args))
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_tasks.py").write_text(readme_block("class SumTask"))
    (work / "my_critics.py").write_text(readme_block("class LengthCritic"))
    cfg = small_config(tmp_path, model_cache, "task.name=null", "task.path=my_tasks:SumTask",
                       "task.args={n: 8}", f"model.path={base}", "arm.name=critique",
                       "critic.name=null", "critic.path=my_critics:LengthCritic",
                       "critic.args={max_chars: 12}", "refine.attempts=1",
                       "tracking.enabled=false", "experiment=sum_plugin")
    config = tmp_path / "config.yaml"
    config.write_text(dump_yaml(cfg))
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
               PYTHONPATH=str(REPO))
    selftrain = Path(sys.executable).parent / "selftrain"  # a script: cwd is not put on the path
    done = subprocess.run([str(selftrain), "run", str(config)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "sum_plugin" / "critique" / "seed0"
    samples = pd.read_parquet(run / "round_0" / "samples.parquet")
    assert samples["prompt"].str.fullmatch(r"\d\+\d=").all()
    assert set(samples["query_id"].str.split("-").str[0]) == {"train"}
    for k in (0, 1):
        metrics = json.loads((run / f"round_{k}" / "metrics.json").read_text())
        assert metrics["critic_calls"] > 0
