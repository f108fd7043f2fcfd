"""Records that must never say something untrue, and mistakes that must be told in one line
before Ray starts (exit 2, no traceback). Each case runs the command line as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from broken_critics import Repeats, Reversed, TooFew, WrongId

from critics import CritiqueRequest, checked
from critics.protocol import CriticOutputError
from selftrain.config import dump_yaml, load_config
from selftrain.runfolder.folder import RunFolder, atomic_write_bytes
from selftrain.types import Query

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "countdown_rs.yaml"


def selftrain(*args: str, cwd: Path = REPO, module: str = "selftrain.cli") -> tuple[int, str]:
    """The command line as a user runs it: exit code, and stdout + stderr together."""
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HOME": str(cwd)}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def recorded_run(tmp_path: Path, *overrides: str) -> Path:
    """A run folder as a run leaves it after round 0: config.yaml and a manifest."""
    cfg = load_config(CONFIG, [f"run_root={tmp_path / 'runs'}", "experiment=e", "rounds=1",
                               *overrides])
    run = tmp_path / "runs" / "e" / "rs" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    manifest = {"rounds": {"0": {"generate": {"files": {}}, "metrics": {"files": {}}}}}
    atomic_write_bytes(run / "manifest.json", json.dumps(manifest).encode())
    return run


# -- item 1: a resume does not rewrite what the recorded rounds were made with --------------


def test_a_resume_that_changes_recorded_settings_stops_and_names_them(tmp_path):
    run = recorded_run(tmp_path)
    written = (run / "config.yaml").read_bytes()
    code, out = selftrain("run", "--resume", str(run), "rounds=3", "rollout.temperature=0.5",
                          "eval.num_samples=8")
    assert code == 2, out
    assert "rollout.temperature=0.5 (recorded: 1.0)" in out
    assert "eval.num_samples=8 (recorded: " in out and "--allow-config-change" in out
    assert "rounds=3" not in out  # extending the run is allowed
    assert "Traceback" not in out
    assert (run / "config.yaml").read_bytes() == written
    code, out = selftrain("run", "--resume", str(run), "rounds=0")
    assert code == 2 and "rounds=0 (recorded: 1)" in out, out


def test_a_resume_may_extend_rounds_and_change_tracking(tmp_path):
    """Past the check, the fabricated folder stops at the pre-flight check of its model (a
    folder that is gone), which shows that the check let the allowed keys through."""
    run = recorded_run(tmp_path, f"model.path={tmp_path / 'gone'}")
    code, out = selftrain("run", "--resume", str(run), "rounds=4", "tracking.enabled=false",
                          "ray.num_cpus=2")
    assert code == 2 and "model.path" in out, out
    assert "recorded:" not in out and "Traceback" not in out, out


def test_an_allowed_change_is_recorded_from_the_round_it_shapes(tmp_path):
    from selftrain.loop.config_change import record_config_changes

    run = recorded_run(tmp_path)
    folder = RunFolder.read(run)
    new = load_config(run / "config.yaml", ["rounds=3", "rollout.temperature=0.5"])
    record_config_changes(folder, new)
    [entry] = RunFolder.read(run).manifest["config_changes"]
    assert entry == {"from_round": 1, "stages_already_recorded": [],
                     "changes": {"rollout.temperature": [1.0, 0.5]}}


def test_the_report_shows_which_rounds_ran_with_a_changed_config(tmp_path):
    from selftrain.report.markdown import config_changes_section
    from selftrain.report.runs import find_runs

    run = recorded_run(tmp_path)
    folder = RunFolder.read(run)
    record_entry = {"from_round": 2, "stages_already_recorded": [],
                    "changes": {"rollout.temperature": [1.0, 0.5]}}
    folder.set_meta(config_changes=[record_entry])
    (run / "round_0").mkdir()
    (run / "round_0" / "metrics.json").write_text(json.dumps({"gen_tokens": 10}))
    lines = config_changes_section(find_runs([tmp_path / "runs"], []))
    assert "| e/rs/seed0 | 2 | rollout.temperature | 1.0 | 0.5 |" in lines


def test_a_resume_of_a_finished_run_answers_from_its_manifest_before_ray(tmp_path):
    import time

    run = recorded_run(tmp_path)
    manifest = {"rounds": {str(k): {"generate": {"files": {}}, "metrics": {"files": {}}}
                           for k in (0, 1)}}
    atomic_write_bytes(run / "manifest.json", json.dumps(manifest).encode())
    for k in (0, 1):
        (run / f"round_{k}").mkdir()
        (run / f"round_{k}" / "metrics.json").write_text(json.dumps({"gen_tokens": 10 + k}))
    start = time.monotonic()
    code, out = selftrain("run", "--resume", str(run))
    assert code == 0, out
    assert "all 1 rounds are recorded; nothing to do" in out and "Traceback" not in out
    assert not (tmp_path / "runs" / ".ray").exists()  # Ray never started
    assert time.monotonic() - start < 60


# -- item 2: critiques are matched to requests by sample_id ---------------------------------


def requests(n: int = 4) -> list[CritiqueRequest]:
    q = Query("cd-hand", 3, "3 7 2 -> 23\n", {"numbers": [3, 7, 2], "target": 23})
    return [CritiqueRequest(sample_id=f"r0-cd-hand-s{i}", query=q, steps=["7*3=21"] * (i + 1),
                            completion="") for i in range(n)]


def test_critiques_in_another_order_are_matched_by_sample_id():
    reqs = requests()
    out = checked(Reversed(), reqs)
    assert [c.sample_id for c in out] == [r.sample_id for r in reqs]
    assert [len(c.verdicts) for c in out] == [1, 2, 3, 4]


@pytest.mark.parametrize("critic, says", [
    (TooFew(), "critic 'too-few' returned 3 critiques for 4 requests: missing r0-cd-hand-s3"),
    (WrongId(), "critic 'wrong-id' returned 4 critiques for 4 requests: missing r0-cd-hand-s3; "
                "not asked for r0-cd-hand-s3-typo"),
    (Repeats(), "critic 'repeats' returned 4 critiques for 4 requests: missing r0-cd-hand-s3; "
                "repeated r0-cd-hand-s0"),
])
def test_a_missing_unknown_or_repeated_sample_id_names_the_critic_and_ids(critic, says):
    with pytest.raises(CriticOutputError) as err:
        checked(critic, requests())
    assert str(err.value).startswith(says)


# -- item 3: sampling settings ---------------------------------------------------------------


@pytest.mark.parametrize("override, says", [
    ("rollout.temperature=-1", "key rollout.temperature must be >= 0 (0 samples greedily)"),
    ("eval.temperature=-0.5", "key eval.temperature must be >= 0"),
    ("rollout.top_p=0", "key rollout.top_p must lie in (0, 1]"),
    ("rollout.top_p=1.5", "key rollout.top_p must lie in (0, 1]"),
])
def test_sampling_settings_out_of_range_stop_with_exit_2(tmp_path, override, says):
    code, out = selftrain("run", str(CONFIG), override, f"run_root={tmp_path}")
    assert code == 2, out
    assert f"command line: {says}" in out and "Traceback" not in out
    assert load_config(CONFIG, ["rollout.temperature=0"]).rollout.temperature == 0  # greedy


# -- item 6: a model folder that cannot load fails before Ray ---------------------------------


def test_a_model_folder_without_weights_or_tokenizer_stops_before_ray(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tmp_path / "model"
    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    config.save_pretrained(model)
    code, out = selftrain("run", str(CONFIG), f"model.path={model}", f"run_root={tmp_path}")
    assert code == 2, out
    assert "holds no weights" in out and "--resume" not in out and "Traceback" not in out
    LlamaForCausalLM(config).save_pretrained(model)
    code, out = selftrain("run", str(CONFIG), f"model.path={model}", f"run_root={tmp_path}")
    assert code == 2, out
    assert "its tokenizer does not load" in out and "--resume" not in out, out
    assert not (tmp_path / "default").exists() and not list(tmp_path.rglob(".ray"))


# -- item 8: messages that name the mistake --------------------------------------------------


def test_override_errors_are_blamed_on_the_command_line(tmp_path):
    code, out = selftrain("run", str(CONFIG), "rounds=three", f"run_root={tmp_path}")
    assert code == 2 and "command line: key rounds must be an integer" in out, out


@pytest.mark.parametrize("root", ["/proc/selftrain-runs", "{tmp}/a-file/runs"])
def test_an_unwritable_run_root_is_named(tmp_path, root):
    (tmp_path / "a-file").write_text("not a folder")
    code, out = selftrain("run", str(CONFIG), f"run_root={root.format(tmp=tmp_path)}")
    assert code == 2, out
    assert "key run_root:" in out and "cannot be written to" in out and "Traceback" not in out


def test_task_args_are_checked_against_the_task_constructor(tmp_path):
    code, out = selftrain("run", str(CONFIG), "task.args.levels=4", f"run_root={tmp_path}")
    assert code == 2, out
    assert "key task.args.levels must be a list, got 4" in out and "Traceback" not in out
    code, out = selftrain("run", str(CONFIG), "task.args.level=[2]", f"run_root={tmp_path}")
    assert code == 2 and "task.args.level is not an argument of the task" in out, out


def test_run_on_a_compare_config_says_to_use_compare(tmp_path):
    code, out = selftrain("run", str(REPO / "configs" / "countdown_compare.yaml"),
                          f"run_root={tmp_path}")
    assert code == 2, out
    assert "it is a compare config" in out and "selftrain compare" in out


def test_python_m_selftrain_is_the_command(tmp_path):
    code, out = selftrain("--help", module="selftrain")
    assert code == 0 and "usage: selftrain" in out, out


def test_a_retriever_answering_500_is_said_to_be_failing_not_down():
    from test_retrieval_faults import serve

    from selftrain.retrieval import HTTPRetriever, RetrieverUnavailable

    class Fails(BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(500)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"oops!")

        def log_message(self, *args):
            pass

    server, url = serve(Fails)
    try:
        with pytest.raises(RetrieverUnavailable) as err:
            HTTPRetriever(url, retries=1, backoff_s=0.01).search(["anything"], 1)
    finally:
        server.shutdown()
        server.server_close()
    assert "is running but failing: it answered HTTP 500 oops!" in str(err.value)
    assert "Is the server running" not in str(err.value)


def test_a_stage_with_one_long_chunk_prints_a_heartbeat_when_redirected():
    """Output to a pipe: a line every `every_s` while the only chunk runs, not only per chunk."""
    code = ("import time\nfrom selftrain.progress import StepProgress\n"
            "with StepProgress('round 0 critique', total=1, every_s=0.5) as p:\n"
            "    time.sleep(1.8)\n    p.advance()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    lines = [line for line in done.stdout.splitlines() if "round 0 critique: 0/1 chunks" in line]
    assert len(lines) >= 2, done.stdout + done.stderr


# -- runs on the test session's Ray cluster (slow) --------------------------------------------


@pytest.fixture(scope="module")
def env(ray_cluster) -> dict[str, str]:
    """Runs join the test session's Ray cluster and import the tests' helper critics."""
    return dict(os.environ, RAY_ADDRESS=ray_cluster.get_runtime_context().gcs_address,
                PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))


def test_an_empty_training_set_carries_the_policy_over(tmp_path, env, model_cache):
    """Completions of one token solve nothing: round 0 accepts no sample, so round 1 does not
    finetune on 0 rows; it says so in one line and the manifest records the carried policy.
    The run folder is printed at start and end, and the log holds the run's main events."""
    from test_user_faults import cli, config_file, finish

    config, run = config_file(tmp_path, model_cache, "rollout.max_new_tokens=1",
                              "tracking.enabled=false")
    code, out, err = finish(cli(["run", str(config)], env))
    assert code == 0, err
    assert "round 1: round 0 accepted no sample (empty training set); no finetune, the policy " \
           "carries over unchanged" in out
    assert f"run folder: {run}" in out and f"run finished: {run}" in out
    manifest = json.loads((run / "manifest.json").read_text())
    finetune = manifest["rounds"]["1"]["finetune"]
    assert finetune["rows"] == 0 and finetune["carried_over"] == manifest["base_model"]
    assert not (run / "round_1" / "checkpoint").exists()
    log = (run / "logs" / "selftrain.log").read_text()
    assert "round 1, stage finetune recorded" in log and "run finished" in log
    assert "Traceback" not in out + err


def test_ctrl_c_stops_in_one_line_with_the_command_to_continue(tmp_path, env, model_cache):
    """SIGINT to the command's process group (what Ctrl-C in a terminal sends) while a slowed
    critic works: one line, exit 130, wandb told the exit code, nothing half-recorded."""
    import signal
    import time

    from test_user_faults import cli, config_file, finish
    from wandb_files import exit_code, run_files

    from selftrain.runfolder.folder import verify

    config, run = config_file(tmp_path, model_cache, "arm.name=critique", "critic.name=null",
                              "critic.path=slow_critic:SlowOracle", "critic.args={delay_s: 60}",
                              "rounds=0", "refine.attempts=1")
    # a terminal's Ctrl-C: SIGINT handled (a background job of a script would inherit it
    # ignored), sent to the command's whole process group
    proc = cli(["run", str(config)], env, start_new_session=True,
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while not (run / "round_0" / "samples.parquet").exists():
        assert proc.poll() is None and time.time() < deadline, "the run did not get going"
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    code, out, err = finish(proc, timeout=300)
    assert code == 130, out + err
    assert err.strip().splitlines()[-1] == (f"interrupted in round 0, stage critique; continue "
                                            f"with: selftrain run --resume {run}")
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert verify(run) == []
    manifest = json.loads((run / "manifest.json").read_text())
    assert "critique" not in manifest["rounds"]["0"]
    [wandb_run] = run_files(run)
    assert exit_code(wandb_run) == 130


DRIVER = """
import sys, time
from pathlib import Path
from selftrain.config import load_config
from selftrain.cluster.ray_start import start_ray
start_ray(load_config(sys.argv[1], ["ray.num_cpus=1"]), Path(sys.argv[2]))
import ray
ray.get(ray.remote(lambda: 1).options(runtime_env={"env_vars": {"X": "1"}}).remote())
print(ray._private.worker._global_node.get_session_dir_path(), flush=True)
time.sleep(600)
"""


def _killed_driver_leaves_nothing(tmp_path, script: str) -> None:
    """Run `script` as a driver that prints its cluster's session folder, SIGKILL it then:
    within 30 s no process of that cluster (gcs, raylet, agents) is left."""
    import signal
    import tempfile
    import time

    from selftrain.cluster.ray_reaper import session_pids

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    driver = subprocess.Popen([sys.executable, "-c", script, str(CONFIG), temp],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    session = driver.stdout.readline().strip()
    try:
        assert session and session_pids(session), "the driver did not start a cluster"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 30
        while session_pids(session) and time.time() < deadline:
            time.sleep(0.5)
        assert session_pids(session) == []
    finally:
        driver.kill()
        for pid in session_pids(session) if session else []:
            os.kill(pid, signal.SIGKILL)  # what the fix failed to end, so the test leaves none


def test_a_sigkilled_driver_leaves_no_ray_process_of_its_cluster(tmp_path):
    """The driver starts its local cluster as a run does, prints the session folder and is
    killed with SIGKILL: within 30 s no process of that cluster (gcs, raylet, agents) is left."""
    _killed_driver_leaves_nothing(tmp_path, DRIVER)


SLOW_INIT = """
import sys, time
from pathlib import Path
import ray
real_init = ray.init
def init(*args, **kwargs):  # the cluster is up, ray.init has not returned: the driver dies here
    real_init(*args, **kwargs)
    print(ray._private.worker._global_node.get_session_dir_path(), flush=True)
    time.sleep(600)
ray.init = init
from selftrain.config import load_config
from selftrain.cluster.ray_start import start_ray
start_ray(load_config(sys.argv[1], ["ray.num_cpus=1"]), Path(sys.argv[2]))
"""


def test_a_driver_killed_while_its_cluster_starts_leaves_nothing(tmp_path):
    """SIGKILL before `ray.init` returns (found by make chaos: the agents stayed, since the
    watcher started after ray.init): within 30 s no process of that cluster is left."""
    _killed_driver_leaves_nothing(tmp_path, SLOW_INIT)


def test_ctrl_c_in_a_compare_names_the_run_and_the_compare_resume(tmp_path, capsys):
    """How the command line tells an interrupted compare (the run of the in-turn compare that
    was interrupted, and the experiment to resume); a folder with nothing to resume gets no
    resume hint."""
    import argparse

    from selftrain.cli import _report_interrupt
    from selftrain.errors import Interrupted

    exp = tmp_path / "runs" / "e"
    (exp / "rs" / "seed0").mkdir(parents=True)
    args = argparse.Namespace(command="compare")
    assert _report_interrupt(Interrupted(1, "generate", exp / "rs" / "seed0"), args) == 130
    assert capsys.readouterr().err == "interrupted (run rs/seed0) in round 1, stage generate\n"
    (exp / "compare.yaml").write_text("rounds: 1\n")
    _report_interrupt(Interrupted(1, "generate", exp / "rs" / "seed0"), args)
    assert capsys.readouterr().err == ("interrupted (run rs/seed0) in round 1, stage generate; "
                                       f"continue with: selftrain compare --resume {exp}\n")
