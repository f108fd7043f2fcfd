"""The failures a new user hit, each reproduced through the command line as a user sees it: a
short error with an exit code and the command to continue, no traceback on the terminal, and
nothing already written lost."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_same_rounds, small_config
from wandb_files import exit_code, run_files

from selftrain.config import dump_yaml
from selftrain.loop.driver import run_arm
from selftrain.runfolder.folder import verify

PARQUETS = ("samples.parquet", "train.parquet", "eval.parquet")
NOISE = ("Traceback", "Token authentication", "Loading weights", "Writing model shards")


def cli(args: list[str], env: dict[str, str], cwd: Path = REPO, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selftrain.cli", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def env(ray_cluster) -> dict[str, str]:
    """Runs join the test session's Ray cluster and import the tests' helper critics."""
    return dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
                PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))


def config_file(tmp_path: Path, model_cache: Path, *overrides: str,
                config: str = "countdown_rs.yaml") -> tuple[Path, Path]:
    """A small config written to a file, and the run folder it will use."""
    cfg = small_config(tmp_path, model_cache, *overrides, config=config)
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(cfg))
    return path, tmp_path / "runs" / cfg.experiment / cfg.arm.name / "seed0"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_cluster, model_cache) -> Path:
    """A finished one-round rs run, to copy and damage."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = small_config(tmp, model_cache, "tracking.enabled=false")
    run_arm(cfg, "rs")
    return tmp / "runs" / cfg.experiment / "rs" / "seed0"


def copy_run(run: Path, root: Path) -> Path:
    """The run folder copied (moved) under another run root."""
    dest = root / run.parent.parent.name / run.parent.name / run.name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("ray_train", ".lock", "logs"))
    return dest


def snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def test_overwrite_of_a_folder_in_use_stops_and_touches_nothing(tmp_path, env, model_cache):
    """A second run, --overwrite or not, pointed at a folder a live run is writing. The live
    run is kept busy by a slowed critic, so the second one surely finds it running."""
    import pandas as pd

    config, run = config_file(tmp_path, model_cache, "experiment=race", "tracking.enabled=false",
                              "arm.name=critique", "critic.name=null", "rounds=0",
                              "critic.path=slow_critic:SlowOracle", "critic.args={delay_s: 20}",
                              "refine.attempts=1")
    first = cli(["run", str(config)], env)
    deadline = time.time() + 600
    while not (run / "round_0" / "samples.parquet").exists():
        assert first.poll() is None and time.time() < deadline, "first run did not get going"
        time.sleep(0.2)
    samples = pd.read_parquet(run / "round_0" / "samples.parquet")
    written = (run / "config.yaml").read_bytes()
    for extra in (["--overwrite"], []):
        code, out, err = finish(cli(["run", str(config), *extra], env), timeout=300)
        assert first.poll() is None, "the first run ended before the second tried: not a race"
        assert code == 2, err
        assert f"is in use by pid {first.pid}" in err
        assert "--overwrite" not in err and "Traceback" not in out + err
    code, out, err = finish(first)
    assert code == 0, err
    assert verify(run) == []
    assert (run / "config.yaml").read_bytes() == written  # the first run's files, untouched
    after = pd.read_parquet(run / "round_0" / "samples.parquet")
    first_pass = after[after["origin"] == "sample"]
    for column in ("sample_id", "completion", "correct"):
        assert first_pass[column].tolist() == samples[column].tolist()


@pytest.mark.parametrize("critic, says", [
    ("Raises", "critic 'raises': ValueError: the critic model is not loaded"),
    ("TooFew", r"critic 'too-few' returned \d+ critiques for \d+ requests"),
    ("WrongVerdicts", r"critic 'wrong-verdicts' returned \d+ verdicts for sample r0-cd-L\d-\d+-s\d"),
])
def test_a_critic_failing_at_run_time_is_told_in_a_few_lines(tmp_path, env, model_cache,
                                                              critic, says):
    config, run = config_file(tmp_path, model_cache, "arm.name=critique", "critic.name=null",
                              f"critic.path=broken_critics:{critic}", "rounds=0",
                              "refine.attempts=1")
    code, out, err = finish(cli(["run", str(config)], env))
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: round 0, stage critique: ") and re.search(says, lines[0])
    log = run / "logs" / "selftrain.log"
    assert f"full traceback: {log}" in err
    assert f"to continue after fixing it: selftrain run --resume {run}" in err
    assert len(lines) == 3
    assert "Traceback" in log.read_text() and re.search(says, log.read_text())
    for noise in NOISE:
        assert noise not in out + err
    files = run_files(run)
    assert len(files) == 1 and exit_code(files[0]) == 1  # wandb knows the run failed


def test_a_damaged_manifest_is_named_and_can_be_recovered(tmp_path, env, finished):
    run = copy_run(finished, tmp_path / "elsewhere")
    manifest = run / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])
    code, out, err = finish(cli(["verify", str(run)], env))
    assert code == 1 and "the manifest itself is damaged" in out and "Traceback" not in out + err
    code, out, err = finish(cli(["run", "--resume", str(run)], env))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{manifest} is damaged" in err and "manifest.json.prev" in err
    shutil.copy(run / "manifest.json.prev", manifest)  # the recovery the message describes
    code, out, err = finish(cli(["run", "--resume", str(run)], env))
    assert code == 0, err
    assert verify(run) == []
    assert_same_rounds(run, finished, (0, 1), PARQUETS)


def test_resume_redoes_a_damaged_stage_of_a_moved_folder(tmp_path, env, finished):
    """The folder is copied elsewhere (config.yaml still names the old run_root), a recorded
    file of its last round is truncated: --resume works on the copy, redoes that round from
    the damaged file's stage, and ends with the same files; the original is untouched."""
    original = snapshot(finished)
    run = copy_run(finished, tmp_path / "moved")
    samples = run / "round_1" / "samples.parquet"
    samples.write_bytes(samples.read_bytes()[:200])
    (run / "round_0" / "eval.parquet").write_bytes(b"not parquet")  # damaged, not needed
    with open(tmp_path / "out.txt", "w") as out_file:  # stdout to a file, as under nohup
        done = subprocess.run([sys.executable, "-m", "selftrain.cli", "run", "--resume", str(run)],
                              env=env, cwd=REPO, stdout=out_file, stderr=subprocess.PIPE,
                              text=True, timeout=900)
    out, err = (tmp_path / "out.txt").read_text(), done.stderr
    assert done.returncode == 0, err
    assert "round_1/samples.parquet was truncated or altered" in out
    assert "redoing round 1 from stage generate (generate, filter, evaluate, metrics)" in out
    assert "note: round_0/eval.parquet" in out
    assert re.search(r"round 1 generate: \d+/\d+ chunks", out)  # plain progress lines
    assert "\n\n\n" not in out
    for noise in NOISE:
        assert noise not in out + err
    assert_same_rounds(run, finished, (1,), PARQUETS)
    assert snapshot(finished) == original


def test_resume_stops_on_a_damaged_file_a_later_round_built_on(tmp_path, env, finished):
    run = copy_run(finished, tmp_path / "moved")
    (run / "round_0" / "metrics.json").write_text("{}")
    code, out, err = finish(cli(["run", "--resume", str(run)], env))
    assert code == 2 and err.count("\n") == 1, err
    assert "round_0/metrics.json was truncated or altered" in err
    assert f"selftrain verify {run}" in err


def test_the_readme_plugin_example_runs_from_the_current_folder(tmp_path, env, model_cache):
    """The README's LengthCritic, verbatim, in my_critics.py of the working directory; the
    command has no PYTHONPATH for it."""
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
                 if "class LengthCritic" in b)
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_critics.py").write_text(block)
    config, run = config_file(tmp_path, model_cache, "arm.name=critique", "critic.name=null",
                              "critic.path=my_critics:LengthCritic", "critic.args={max_chars: 12}",
                              "rounds=0", "refine.attempts=1", "tracking.enabled=false")
    plain = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    selftrain = Path(sys.executable).parent / "selftrain"  # the installed command, not -m
    done = subprocess.run([str(selftrain), "run", str(config)], env=plain, cwd=work,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    critiques = json.loads((run / "round_0" / "metrics.json").read_text())
    assert critiques["critic_calls"] > 0
