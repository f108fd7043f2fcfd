"""The `GenerationBackend` contract, checked the same way on every backend.

`hf` runs everywhere; `vllm` runs where vLLM imports (scripts/test_vllm.sh builds .venv-vllm with
PyPI's CPU build) and is skipped elsewhere. Each backend is created once per module: a vLLM
engine takes from seconds to a minute to start on CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import require_vllm

from selftrain.agent import STOP, run_episodes, search_observation
from selftrain.backends import SamplingConfig, make_backend
from selftrain.backends.hf import HFBackend
from selftrain.config import TinyModelConfig
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.retrieval import Doc

# Longer than a vLLM KV-cache block (128 tokens on CPU), so a reload test also sees whether
# cached prefix blocks of the old weights are reused.
LONG_PROMPT = "".join(chr(33 + (i * 7) % 90) for i in range(150))
PROMPTS = ["Question: 12+7=?\nAnswer:", "abc", LONG_PROMPT]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=16)


def save_model(out: Path, seed: int, tokenizer=None) -> Path:
    """An untrained tiny Llama with enlarged random weights, saved like a round's checkpoint.

    At the default init (std 0.02) every seed mostly echoes the prompt's last character; extra
    noise gives each seed greedy outputs of its own, so a weight swap shows in the text.
    """
    tokenizer = tokenizer or build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=seed), len(tokenizer), tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"a": save_model(root / "a", seed=0), "b": save_model(root / "b", seed=1)}


@pytest.fixture(scope="module", params=["hf", "vllm"])
def backend(request, models):
    if request.param == "vllm":
        require_vllm()
    b = make_backend(request.param, str(models["a"]))
    yield b
    if hasattr(b, "shutdown"):
        b.shutdown()


def texts(out) -> list[list[str]]:
    return [[g.text for g in gens] for gens in out]


@pytest.mark.parametrize("n", [1, 3])
def test_n_generations_per_prompt_in_prompt_order(backend, n):
    out = backend.generate(PROMPTS, SamplingConfig(n=n, max_new_tokens=8), seed=0)
    assert [len(gens) for gens in out] == [n] * len(PROMPTS)
    for gen in (g for gens in out for g in gens):
        assert 0 < gen.num_tokens <= 8
        assert gen.finish_reason in ("stop", "length")
    assert backend.generate([], SamplingConfig(), seed=0) == []


def test_samples_of_one_prompt_differ(backend):
    out = backend.generate(PROMPTS, SamplingConfig(n=4, max_new_tokens=16), seed=0)
    for gens in texts(out):
        assert len(set(gens)) > 1, gens


def test_text_ends_just_after_the_stop_string(backend):
    full = backend.generate(PROMPTS[:1], GREEDY, seed=0)[0][0].text
    assert len(full) >= 8, full
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    expected = full[: full.index(stop) + len(stop)]

    params = SamplingConfig(temperature=0.0, max_new_tokens=16, stop=(stop,))
    gen = backend.generate(PROMPTS[:1], params, seed=0)[0][0]
    assert gen.text == expected
    assert gen.finish_reason == "stop"
    assert backend.count_tokens([expected])[0] <= gen.num_tokens < 16


def test_sampled_texts_stop_at_the_first_stop_string(backend):
    stops = ("a", "e", "o", "5", "x", "M")
    out = backend.generate(PROMPTS, SamplingConfig(n=4, max_new_tokens=16, stop=stops), seed=3)
    hits = 0
    for gen in (g for gens in out for g in gens):
        for s in stops:  # a stop string may only appear at the very end
            assert gen.text.find(s) in (-1, len(gen.text) - len(s)), (s, gen.text)
        if gen.text.endswith(stops):
            hits += 1
            assert gen.finish_reason == "stop"
    assert hits > 0


def test_same_seed_same_texts_other_seed_other_texts(backend):
    params = SamplingConfig(n=2, temperature=1.0, max_new_tokens=16)
    first = texts(backend.generate(PROMPTS, params, seed=1))
    assert texts(backend.generate(PROMPTS, params, seed=1)) == first
    assert texts(backend.generate(PROMPTS, params, seed=2)) != first


def test_greedy_ignores_the_seed(backend):
    first = texts(backend.generate(PROMPTS, GREEDY, seed=0))
    assert texts(backend.generate(PROMPTS, GREEDY, seed=9)) == first


def test_greedy_with_n_gives_n_equal_texts(backend):
    out = backend.generate(PROMPTS, SamplingConfig(n=3, temperature=0.0, max_new_tokens=8), seed=0)
    assert [len(set(gens)) for gens in texts(out)] == [1] * len(PROMPTS)
    assert [len(gens) for gens in out] == [3] * len(PROMPTS)


def test_max_new_tokens_is_respected(backend):
    out = backend.generate(PROMPTS, SamplingConfig(n=4, max_new_tokens=5), seed=0)
    for gen in (g for gens in out for g in gens):
        assert gen.num_tokens <= 5
        assert backend.count_tokens([gen.text])[0] <= 5


def test_num_tokens_counts_the_eos(backend):
    out = backend.generate(PROMPTS, SamplingConfig(n=8, max_new_tokens=32), seed=4)
    ended = [g for gens in out for g in gens if g.finish_reason == "stop"]  # no stop strings: EOS
    assert ended
    for gen in ended:
        assert gen.num_tokens >= backend.count_tokens([gen.text])[0] + 1


def test_load_weights_swaps_the_live_model(backend, models):
    before = texts(backend.generate(PROMPTS, GREEDY, seed=0))
    try:
        backend.load_weights(str(models["b"]))
        swapped = texts(backend.generate(PROMPTS, GREEDY, seed=0))
        assert swapped != before
        # The reloaded engine must behave as if it had been started on the new checkpoint.
        assert swapped == texts(HFBackend(str(models["b"])).generate(PROMPTS, GREEDY, seed=0))
    finally:
        backend.load_weights(str(models["a"]))
    assert texts(backend.generate(PROMPTS, GREEDY, seed=0)) == before


def test_count_tokens_and_max_context(backend):
    assert backend.count_tokens(["abc", "", "a\nb c"]) == [3, 0, 5]
    assert backend.max_context() == TinyModelConfig().max_position_embeddings


# ---------------------------------------------------------------- multi-turn agent rollouts

AGENT_PROMPT = "Who wrote Hamlet?\n"
AGENT_DOC = Doc(id="d1", title="Hamlet", text="a play by Shakespeare")


class OneDocRetriever:
    """Every search finds the same document."""

    def search(self, queries: list[str], topk: int) -> list[list[Doc]]:
        return [[AGENT_DOC] for _ in queries]


@pytest.fixture(scope="module")
def agent_model(tmp_path_factory) -> Path:
    """A tiny Llama that has memorized one search episode: search, read, answer.

    The observation is masked out of the loss, as in the loop's finetune: the model only learns
    to write actions, and must stop at each action's closing tag to let the environment speak.
    """
    from selftrain.train.sft import SFTExample, SFTSettings, train_sft

    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(seed=2), len(tokenizer), tokenizer)
    search, obs = "<search>hamlet author</search>", search_observation([AGENT_DOC])
    completion = search + obs + "<answer>Shakespeare</answer>"
    example = SFTExample(AGENT_PROMPT, completion, [(len(search), len(search) + len(obs))])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine, 2 threads are ~50x slower than 1
    try:
        stats = train_sft(model, tokenizer, [example],
                          SFTSettings(lr=5e-3, batch_size=1, epochs=80, warmup_ratio=0.05),
                          torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert stats["loss"] < 0.05, stats
    out = tmp_path_factory.mktemp("agent") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return out


def test_multi_turn_agent_episodes_stop_at_each_action(backend, models, agent_model):
    """Generation stops just after `</search>`, the environment's observation is appended, and
    the policy continues from there to `</answer>`: Search-R1-style episodes, as the rollout
    worker runs them, on both backends."""
    params = SamplingConfig(temperature=0.0, max_new_tokens=40, stop=STOP)
    finish: list[str] = []

    def one_turn(contexts: list[str]) -> list[tuple[str, int]]:
        outs = backend.generate(contexts, params, seed=0)
        finish.extend(gens[0].finish_reason for gens in outs)
        return [(gens[0].text, gens[0].num_tokens) for gens in outs]

    backend.load_weights(str(agent_model))
    try:
        [traj] = run_episodes([AGENT_PROMPT], one_turn, OneDocRetriever(), max_turns=3, topk=1)
    finally:
        backend.load_weights(str(models["a"]))
    assert [t.text for t in traj.turns] == ["<search>hamlet author</search>",
                                            "<answer>Shakespeare</answer>"]
    assert [t.kind for t in traj.turns] == ["search", "answer"]
    assert traj.stop_reason == "answer" and finish == ["stop", "stop"]
    assert traj.turns[0].observation == search_observation([AGENT_DOC])
    assert traj.turns[0].num_tokens == len("<search>hamlet author</search>")  # char tokenizer


def test_vllm_reads_a_bpe_model_as_transformers_does(tmp_path):
    """The multihop base model's byte-level BPE tokenizer (model.tiny.tokenizer: bpe) loads in
    vLLM with the same ids: greedy texts and token counts equal the transformers backend's."""
    require_vllm()
    from selftrain.models.tiny_model import build_tokenizer
    from selftrain.tasks import make_task

    task = make_task("multihop", seed=0, levels=[1, 2], train_per_level=4, test_per_level=2,
                     topk=1, max_turns=3, cache_dir=str(tmp_path / "corpus"))
    demos = [d.prompt + d.completion for d in task.demonstrations([1, 2], 1, 0, 100)]
    tokenizer = build_tokenizer(TinyModelConfig(tokenizer="bpe", bpe_vocab_size=512), demos)
    model = save_model(tmp_path / "m", seed=0, tokenizer=tokenizer)
    prompts = [q.prompt for q in task.queries("test")]
    params = SamplingConfig(temperature=0.0, max_new_tokens=16, stop=STOP)
    outs = {}
    for name in ("hf", "vllm"):
        b = make_backend(name, str(model))
        # An untrained byte-level model can stop inside a multi-byte character: vLLM holds the
        # unfinished bytes back, transformers writes them as U+FFFD. Compare without them.
        outs[name] = [[(g.text.rstrip("\ufffd"), g.num_tokens) for g in gens]
                      for gens in b.generate(prompts, params, seed=0)]
        assert b.count_tokens(prompts) == [len(tokenizer(p)["input_ids"]) for p in prompts]
        if hasattr(b, "shutdown"):
            b.shutdown()
    assert outs["vllm"] == outs["hf"]
