"""Scorers (selftrain/scorers/): a tiny randomly initialised Llama reward model built here (its
scores recomputed by hand from the hidden state and the head), a served judge on the fake
OpenAI server (readable, unreadable and failing answers), and a plain Python scorer by path."""

from __future__ import annotations

import math

import pytest
import torch
from fake_openai import serving
from transformers import LlamaConfig, LlamaForSequenceClassification

from selftrain.models.tiny_model import build_char_tokenizer
from selftrain.scorers import SCORERS, ScorerLoadError, build_scorer
from selftrain.scorers.judge import ScorerUnavailableError
from selftrain.scorers.reward_model import sigmoid
from selftrain.tasks import abilities, make_task

TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}")
PROMPTS = ["sea: b d\n", "write a line about the sky", "x"]
COMPLETIONS = ["bavo dune", "a long and winding line about the sky and its clouds", "y"]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A one-label Llama sequence classifier with random weights and a chat-template tokenizer."""
    path = tmp_path_factory.mktemp("rm")
    tok = build_char_tokenizer()
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=256, num_labels=1, pad_token_id=tok.pad_token_id)
    model = LlamaForSequenceClassification(cfg)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # logits well away from 0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), tok


def test_reward_model_score_is_the_sigmoid_of_the_head_on_the_last_token(reward_model):
    path, model, tok = reward_model
    scorer = build_scorer({"name": "reward_model", "args": {"model": str(path), "batch_size": 2}})
    got = scorer.score(PROMPTS, COMPLETIONS)
    for p, c, s in zip(PROMPTS, COMPLETIONS, got):
        text = tok.apply_chat_template([{"role": "user", "content": p},
                                        {"role": "assistant", "content": c}], tokenize=False)
        assert text == f"<s>user: {p}</s>\n<s>assistant: {c}</s>\n"
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # by hand: the head's weights on the last token's hidden state
            hidden = model.model(input_ids=ids).last_hidden_state[0, -1]
            logit = float(hidden @ model.score.weight[0])
        assert s.raw == pytest.approx(logit, abs=1e-4)
        assert s.value == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)
    assert len({round(s.value, 4) for s in got}) == 3  # batched with padding, still distinct
    shifted = build_scorer({"name": "reward_model",
                            "args": {"model": str(path), "shift": 1.0, "scale": 2.0}})
    assert [s.value for s in shifted.score(PROMPTS, COMPLETIONS)] == pytest.approx(
        [sigmoid((s.raw - 1.0) / 2.0) for s in got], abs=1e-5)
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0


def test_reward_model_needs_one_label_and_a_chat_template(reward_model, tmp_path):
    path, model, tok = reward_model
    two = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2))
    two.save_pretrained(tmp_path / "two")
    tok.save_pretrained(tmp_path / "two")
    with pytest.raises(ScorerLoadError, match="2 labels"):
        build_scorer({"name": "reward_model", "args": {"model": str(tmp_path / "two")}})
    plain = build_char_tokenizer()
    model.save_pretrained(tmp_path / "plain")
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ScorerLoadError, match="chat template"):
        build_scorer({"name": "reward_model", "args": {"model": str(tmp_path / "plain")}})


def judge_answer(prompt: str) -> str:
    if "UNREADABLE" in prompt:
        return "It is a fine line, I suppose."
    if "OUTOFRANGE" in prompt:
        return "Score: 42"
    return "Thinking.\nScore: 3\nOn reflection, Score: 7" if "sky" in prompt else "Score: 1"


def test_served_judge_scales_the_last_score_line_and_counts_what_it_cannot_read():
    with serving(judge_answer) as srv:
        srv.flaky = 1
        judge = build_scorer({"name": "judge", "args": {
            "base_url": srv.base_url, "model": "critic-model", "backoff_s": 0.01,
            "timeout_s": 5, "low": 1, "high": 10}})
        completions = ["under the sky", "plain", "UNREADABLE", "GIBBERISH", "BADJSON",
                       "OUTOFRANGE", "FLAKY"]
        got = judge.score(["p"] * len(completions), completions)
        assert [s.value for s in got] == pytest.approx(
            [6 / 9, 0.0, None, None, None, None, 0.0], nan_ok=False)
        assert judge.unknown == 4
        assert got[0].raw.endswith("Score: 7") and got[2].error
        body = next(b for path, b, _ in srv.seen if "under the sky" in b["messages"][-1]["content"])
        assert body["model"] == "critic-model" and "from 1 (worst) to 10" in body["messages"][-1]["content"]


def test_served_judge_that_is_down_is_an_error_not_a_row_of_unknowns():
    with serving(judge_answer) as srv:
        url = srv.base_url
    judge = build_scorer({"name": "judge", "args": {"base_url": url, "model": "m", "retries": 0,
                                                    "timeout_s": 2}})
    with pytest.raises(ScorerUnavailableError, match="none of 2 requests"):
        judge.score(["p", "q"], ["a", "b"])


PLAIN = """
def share_of_vowels(prompt, completion, vowels="aeiou"):
    letters = [c for c in completion if c.isalpha()]
    return sum(c in vowels for c in letters) / len(letters) if letters else None
"""


def test_a_plain_python_function_is_a_scorer_by_path(tmp_path, monkeypatch):
    (tmp_path / "my_grading.py").write_text(PLAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = build_scorer({"path": "my_grading:share_of_vowels", "args": {"vowels": "a"}})
    got = scorer.score(["p", "p"], ["banana", "123"])
    assert [s.value for s in got] == [0.5, None]
    with pytest.raises(ScorerLoadError, match="known scorers: judge, reward_model"):
        build_scorer({"name": "nope"})
    assert {"judge", "reward_model"} <= set(SCORERS.names())


def test_open_ended_task_grades_a_prompt_file_with_its_scorer(tmp_path, monkeypatch):
    (tmp_path / "my_grading.py").write_text(PLAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = "\n".join(f'{{"prompt": "write about {w}", "id": "{w}"}}' for w in ("sea", "sky", "fog"))
    (tmp_path / "prompts.jsonl").write_text(rows + "\n")
    task = make_task("open_ended", train=str(tmp_path / "prompts.jsonl"),
                     test=str(tmp_path / "prompts.jsonl"), test_size=1, id_column="id",
                     pass_threshold=0.5, scorer={"path": "my_grading:share_of_vowels"})
    task.check()
    assert [q.query_id for q in task.queries("train")] == ["train-sea", "train-sky", "train-fog"]
    assert len(task.queries("test")) == 1
    q = task.queries("train")[0]
    assert q.prompt == "write about sea\n"
    assert abilities(task).graded is task and abilities(task).input_check is task
    assert task.score_batch(q, ["aaa", "bab", "xyz", "!"]) == pytest.approx([1.0, 1 / 3, 0.0, None])
    assert task.is_correct(q, "aab") and not task.is_correct(q, "abb") and not task.is_correct(q, "!")
    with pytest.raises(Exception, match="no column 'text'"):
        make_task("open_ended", train=str(tmp_path / "prompts.jsonl"),
                  test=str(tmp_path / "prompts.jsonl"), prompt_column="text",
                  scorer={"name": "judge"}).check()
