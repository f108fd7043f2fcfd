"""The served critic (`critic.name: openai`) against a real HTTP server on loopback that speaks
the OpenAI API (tests/fake_openai.py) and misbehaves on request: down, failing then
recovering, dripping its answer, answering garbage. Every fault must end in a bounded time, as
an unknown verdict or a clear error, never a hang or a crash."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from fake_openai import MODEL, FakeOpenAI, serving

from critics import CriticLoadError, CritiqueRequest, build_critic, checked
from critics.served import CriticUnavailableError, OpenAICritic
from selftrain.config import dump_yaml, load_config
from selftrain.loop.checks import preflight
from selftrain.types import Query

REPO = Path(__file__).resolve().parent.parent
Q = Query("q0", 3, "3 7 2 -> 23\n", {"numbers": [3, 7, 2], "target": 23})
_ARITHMETIC = re.compile(r"^(\d+)\. (\d+)([-+*])(\d+)=(\d+)$")


def judge(prompt: str) -> str:
    """The server's critic: a numbered step is correct when its arithmetic is."""
    lines = []
    for line in prompt.splitlines():
        m = _ARITHMETIC.match(line)
        if m:
            a, op, b, c = int(m[2]), m[3], int(m[4]), int(m[5])
            ok = {"+": a + b, "-": a - b, "*": a * b}[op] == c
            lines.append(f"Step {m[1]}: {'correct — ok' if ok else 'incorrect — arithmetic'}")
    return "\n".join(lines)


@pytest.fixture
def server():
    with serving(judge) as srv:
        yield srv


def critic(server: FakeOpenAI, **args) -> OpenAICritic:
    made = build_critic("openai", None, {"base_url": server.base_url, "model": MODEL, **args}, None)
    assert isinstance(made, OpenAICritic)
    return made


def request(steps: list[str], sample_id: str = "s0", prompt: str | None = None) -> CritiqueRequest:
    query = Q if prompt is None else Query("q1", 3, prompt)
    return CritiqueRequest(sample_id=sample_id, query=query, steps=steps)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp_path: Path, **args):
    return load_config(REPO / "configs" / "countdown_rs.yaml", [
        f"run_root={tmp_path / 'runs'}", "arm.name=critique", "critic.name=openai",
        f"critic.args={json.dumps(args)}"])


# ---------------------------------------------------------------- normal answers


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_verdicts_and_tokens_come_from_the_server(server, api):
    crit = critic(server, api=api, system="You check arithmetic.", max_tokens=64)
    reqs = [request(["7*3=21", "21+2=23"], "good"), request(["7*3=20", "20+3=23"], "bad")]
    good, bad = checked(crit, reqs)
    assert [v.ok for v in good.verdicts] == [True, True] and good.passed
    assert [v.ok for v in bad.verdicts] == [False, True] and bad.first_error == 0
    assert good.raw_text == "Step 1: correct — ok\nStep 2: correct — ok"
    assert good.tokens == len(good.raw_text.split()) and good.row()["critic_tokens"] == good.tokens
    assert good.extra == {"unknown_steps": 0}
    path, body, _ = next(seen for seen in server.seen if "7*3=21" in json.dumps(seen[1]))
    assert path == ("/v1/chat/completions" if api == "chat" else "/v1/completions")
    assert body["model"] == MODEL and body["max_tokens"] == 64 and body["temperature"] == 0.0
    if api == "chat":
        assert body["messages"][0] == {"role": "system", "content": "You check arithmetic."}
        assert body["messages"][1]["content"] == "3 7 2 -> 23\n1. 7*3=21\n2. 21+2=23\nVerdicts:\n"


def test_no_more_requests_in_flight_than_the_concurrency_limit(server):
    """The server lets requests through two at a time (a barrier of two): a client sending
    one at a time would stall it, one sending more than two would show in max_inflight."""
    server.barrier = threading.Barrier(2, timeout=10)
    crit = critic(server, concurrency=2, retries=0)
    crits = checked(crit, [request(["7*3=21"], f"s{i}") for i in range(8)])
    assert all(c.passed for c in crits)
    assert server.max_inflight == 2


# ---------------------------------------------------------------- faults


def test_an_endpoint_that_is_down_fails_the_preflight_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(CriticLoadError, match=r"cannot reach http://127.0.0.1:\d+/v1 \(ConnectError"):
        preflight(config(tmp_path, base_url=f"http://127.0.0.1:{free_port()}/v1", model=MODEL), "run")
    assert time.monotonic() - start < 10


def test_the_preflight_passes_a_live_endpoint_and_names_a_model_it_does_not_serve(server, tmp_path):
    preflight(config(tmp_path, base_url=server.base_url, model=MODEL), "run")
    with pytest.raises(CriticLoadError, match=r"serves \['critic-model'\], not 'gpt-x'"):
        preflight(config(tmp_path, base_url=server.base_url, model="gpt-x"), "run")


def test_server_errors_are_retried_until_an_answer(server):
    server.flaky = 2
    crit = critic(server, retries=3, backoff_s=0.01)
    [c] = checked(crit, [request(["7*3=21"], prompt="FLAKY 3 7 2 -> 23\n")])
    assert c.passed and "error" not in c.extra
    assert len(server.seen) == 3  # two 500s, then the answer


def test_a_request_out_of_retries_is_unknown_and_the_rest_go_on(server):
    server.flaky = 10
    crit = critic(server, retries=1, backoff_s=0.01)
    flaky, fine = checked(crit, [request(["7*3=21", "21+2=23"], "f", prompt="FLAKY\n"),
                                 request(["7*3=21"], "ok")])
    assert [v.ok for v in flaky.verdicts] == [None, None] and flaky.extra["unknown_steps"] == 2
    assert flaky.extra["error"].startswith("HTTP 500") and "(after 2 attempts)" in flaky.extra["error"]
    assert flaky.raw_text is None and fine.passed


def test_a_dripping_server_is_cut_at_the_deadline(server):
    crit = critic(server, timeout_s=1.0, retries=2)
    start = time.monotonic()
    drip, fine = checked(crit, [request(["7*3=21"], "d", prompt="DRIP\n"), request(["7*3=21"], "ok")])
    assert time.monotonic() - start < 6  # the drip alone would take 60 s
    assert drip.verdicts[0].ok is None and drip.extra["error"] == "no answer within timeout_s=1.0"
    assert fine.passed


def test_a_call_in_which_nothing_is_answered_is_an_error_not_unknowns(server):
    crit = critic(server, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(CriticUnavailableError, match="none of 2 requests .* got an answer"):
        crit.critique([request(["7*3=21"], "a", prompt="DRIP\n"), request(["1+1=2"], "b", prompt="DRIP\n")])
    assert time.monotonic() - start < 6


@pytest.mark.parametrize("marker, error", [("BADJSON", "malformed answer"), ("GIBBERISH", None)])
def test_an_answer_that_cannot_be_read_is_unknown_and_counted(server, marker, error):
    crit = critic(server, api="completions")
    [c] = checked(crit, [request(["7*3=21", "21+2=23"], prompt=f"{marker}\n")])
    assert [v.ok for v in c.verdicts] == [None, None] and not c.passed
    assert c.extra["unknown_steps"] == 2 and c.row()["step_unknown"] == [True, True]
    assert (c.extra.get("error") or "").startswith(error or "")
    assert c.raw_text == ("" if marker == "BADJSON" else "I am not sure.")


# ---------------------------------------------------------------- the API key


def test_the_key_is_read_from_the_environment_and_never_written(server, tmp_path, monkeypatch):
    server.key = "sk-test-secret"
    monkeypatch.setenv("SELFTRAIN_TEST_CRITIC_KEY", "sk-test-secret")
    with pytest.raises(CriticLoadError, match="refused us with HTTP 401; set critic.args.api_key_env"):
        preflight(config(tmp_path, base_url=server.base_url, model=MODEL), "run")
    cfg = config(tmp_path, base_url=server.base_url, model=MODEL, api_key_env="SELFTRAIN_TEST_CRITIC_KEY")
    preflight(cfg, "run")
    crit = build_critic(cfg.critic.name, cfg.critic.path, cfg.critic.args, None)
    [c] = checked(crit, [request(["7*3=21"])])
    assert c.passed and server.seen[-1][2] == "Bearer sk-test-secret"
    dumped = dump_yaml(cfg)
    assert "SELFTRAIN_TEST_CRITIC_KEY" in dumped and "sk-test-secret" not in dumped
    assert "sk-test-secret" not in json.dumps(c.row())


@pytest.mark.parametrize("args, message", [
    ({"base_url": "127.0.0.1:8000/v1"}, "base_url '127.0.0.1:8000/v1' must start with http://"),
    ({"api": "responses"}, "api must be chat or completions, got 'responses'"),
    ({"timeout_s": 0}, "timeout_s > 0"),
    ({"temprature": 0.5}, "could not be built with args"),
])
def test_bad_args_are_errors_at_build(server, args, message):
    with pytest.raises(CriticLoadError, match=message):
        critic(server, **args)


def test_a_key_variable_that_is_not_set_is_an_error_at_build(server, monkeypatch):
    monkeypatch.delenv("SELFTRAIN_TEST_CRITIC_KEY", raising=False)
    with pytest.raises(CriticLoadError, match="api_key_env names SELFTRAIN_TEST_CRITIC_KEY, which is not set"):
        critic(server, api_key_env="SELFTRAIN_TEST_CRITIC_KEY")
