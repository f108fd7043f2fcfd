"""Published PRMs as `prm` critics: each convention on a tiny random model saved to a folder and
loaded by path, exactly as a hub id is, its scores checked against the model card's own
recipe computed here from the model's logits."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

from critics import CriticLoadError, CritiqueRequest, build_critic, checked
from selftrain.models.tiny_model import build_char_tokenizer, portable_tokenizer_config
from selftrain.types import Query

MARKERS = ["ки", "<extra_0>", "<|im_start|>", "<|im_end|>", "<|start_header_id|>",
           "<|end_header_id|>", "<|eot_id|>"]
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
"""Qwen2's chat format: what Qwen2.5-Math-PRM's tokenizer renders."""
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
                   "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>"
                   "\n\n{% endif %}")
"""Llama 3.1's chat format (without its date header): what RLHFlow's PRM renders; the reply
'+' is followed by <|eot_id|>, so the card reads the logits at position -3."""

QUERY = Query("q0", 2, "3 7 2 -> 23\n", {"question": "Reach 23 from 3 7 2."})
STEPS = [["7*3=21", "21+2=23"], ["7+3=10"], ["1+1=2", "2+2=4", "4-4=0"], ["7*3=20", "20+3=23"]]
REQUESTS = [CritiqueRequest(f"s{i}", QUERY, steps) for i, steps in enumerate(STEPS)]
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

REMOTE_CODE = '''
import torch
from transformers import LlamaModel, LlamaPreTrainedModel


class TinyProcessRewardModel(LlamaPreTrainedModel):
    """Qwen2ForProcessRewardModel's shape: a backbone and a two-layer two-class score head."""

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        h = config.hidden_size
        self.score = torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
'''


def tokenizer(markers=MARKERS, chat_template=None):
    tok = build_char_tokenizer()
    tok.add_tokens(list(markers))
    tok.chat_template = chat_template
    return tok


def config(tok, **extra) -> LlamaConfig:
    # initializer_range 0.5: logits far apart, so a score read at a wrong position shows
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, initializer_range=0.5,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **extra)


def save(model, tok, out: Path) -> str:
    model.save_pretrained(out)
    tok.save_pretrained(out)
    portable_tokenizer_config(out)
    return str(out)


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    """A tiny random causal LM with every marker token, a Llama-3 chat template, on disk."""
    torch.manual_seed(0)
    tok = tokenizer(chat_template=LLAMA3_TEMPLATE)
    model = LlamaForCausalLM(config(tok)).eval()
    return model, tok, save(model, tok, tmp_path_factory.mktemp("causal"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny random two-class token classifier with a Qwen chat template, on disk."""
    torch.manual_seed(1)
    tok = tokenizer(chat_template=QWEN_TEMPLATE)
    model = LlamaForTokenClassification(config(tok, num_labels=2)).eval()
    return model, tok, save(model, tok, tmp_path_factory.mktemp("classifier"))


def scores_of(critic, requests=REQUESTS) -> list[list[float]]:
    crits = checked(critic, requests)
    for crit in crits:
        assert all(v.ok == (v.score >= critic.threshold) for v in crit.verdicts)
    return [[v.score for v in c.verdicts] for c in crits]


def assert_same(got: list[list[float]], expected: list[list[float]]) -> None:
    """Equal to float noise (padding changes the kernels), and far enough apart, in log-odds,
    that a score read at a wrong position would show."""
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-3, abs=1e-6)
    odds = [math.log(p) - math.log1p(-p) for row in expected for p in row]
    assert max(odds) - min(odds) > 0.5, "scores too alike to tell positions apart"


# ---------------------------------------------------------------- step_tag (Math-Shepherd)


@torch.no_grad()
def math_shepherd_card(model, tok, question: str, steps: list[str]) -> list[float]:
    """The model card's recipe: candidates "+"/"-", tag "ки", `f"{question} {output}"`."""
    candidate_tokens = tok.convert_tokens_to_ids(["+", "-"])
    step_tag_id = tok.convert_tokens_to_ids("ки")
    output = "\n".join(f"Step {i}: {step} ки" for i, step in enumerate(steps, 1))
    input_id = torch.tensor([tok.encode(f"{question} {output}")])
    logits = model(input_id).logits[:, :, candidate_tokens]
    scores = logits.softmax(dim=-1)[:, :, 0]
    return scores[input_id == step_tag_id].tolist()


def test_step_tag_scores_are_the_model_cards_at_every_tag(causal):
    model, tok, path = causal
    critic = build_critic("prm", None, {"model_path": path, "mode": "step_tag", "batch_size": 3}, None)
    expected = [math_shepherd_card(model, tok, QUERY.prompt, r.steps) for r in REQUESTS]
    assert_same(scores_of(critic), expected)
    assert critic.threshold == 0.5


def test_step_tag_on_a_question_holding_the_tag_names_the_sample(causal):
    _, _, path = causal
    critic = build_critic("prm", None, {"model_path": path, "mode": "step_tag"}, None)
    odd = Query("q1", 2, "3 ки 7 -> 10\n")
    with pytest.raises(ValueError, match="sample s9 has 1 steps but its encoding has 2 score positions"):
        critic.critique([CritiqueRequest("s9", odd, ["3+7=10"])])


# ---------------------------------------------------------------- token_classification (Qwen)


def make_step_rewards(logits, token_masks):
    """Qwen2.5-Math-PRM model card."""
    probabilities = torch.nn.functional.softmax(logits, dim=-1)
    probabilities = probabilities * token_masks.unsqueeze(-1)
    all_scores_res = []
    for i in range(probabilities.size(0)):
        sample = probabilities[i]
        positive_probs = sample[sample != 0].view(-1, 2)[:, 1]
        all_scores_res.append(positive_probs.cpu().tolist())
    return all_scores_res


@torch.no_grad()
def qwen_card(model, tok, query: str, steps: list[str]) -> list[float]:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": query},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    conversation_str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    input_ids = tok.encode(conversation_str, return_tensors="pt")
    outputs = model(input_ids=input_ids)
    step_sep_id = tok.encode("<extra_0>", add_special_tokens=False)[0]
    token_masks = input_ids == step_sep_id
    return make_step_rewards(outputs[0], token_masks)[0]


def test_token_classification_scores_are_the_model_cards_at_every_separator(classifier):
    model, tok, path = classifier
    args = {"model_path": path, "mode": "token_classification", "batch_size": 2,
            "question_template": "{data[question]}", "threshold": 0.6}
    critic = build_critic("prm", None, args, None)
    expected = [qwen_card(model, tok, QUERY.data["question"], r.steps) for r in REQUESTS]
    assert_same(scores_of(critic), expected)
    assert critic.threshold == 0.6


def test_a_head_that_ships_its_own_code_loads_only_with_trust_remote_code(tmp_path):
    """Qwen2.5-Math-PRM's score head is its own class (remote code, reached through AutoModel).
    Without trust_remote_code the stock classifier would start a random head: refused."""
    tok = tokenizer(chat_template=QWEN_TEMPLATE)
    (tmp_path / "modeling_tiny_prm.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("modeling_tiny_prm", tmp_path / "modeling_tiny_prm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_tiny_prm"] = module
    spec.loader.exec_module(module)
    torch.manual_seed(2)
    conf = config(tok)
    conf.auto_map = {"AutoModel": "modeling_tiny_prm.TinyProcessRewardModel"}
    model = module.TinyProcessRewardModel(conf).eval()
    path = save(model, tok, tmp_path)
    args = {"model_path": path, "mode": "token_classification"}
    with pytest.raises(CriticLoadError, match="weights untrained .*score.*trust_remote_code: true"):
        build_critic("prm", None, args, None)
    critic = build_critic("prm", None, {**args, "trust_remote_code": True}, None)
    expected = [qwen_card(model, tok, QUERY.prompt, r.steps) for r in REQUESTS]
    assert_same(scores_of(critic), expected)


# ---------------------------------------------------------------- chat_turns (RLHFlow)


@torch.no_grad()
def rlhflow_card(model, tok, question: str, steps: list[str]) -> list[float]:
    """RLHF-Reward-Modeling's step scoring: one pass per step, the logits at position -3."""
    candidate_tokens = [tok.encode("+")[-1], tok.encode("-")[-1]]
    single_step_score, conversation = [], []
    for k in range(len(steps)):
        text = question + " " + steps[0] if k == 0 else steps[k]
        conversation.append({"content": text, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
        input_ids = tok.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
        logits = model(input_ids).logits[:, -3, candidate_tokens]
        single_step_score.append(logits.softmax(dim=-1)[:, 0][0].item())
    return single_step_score


def test_chat_turns_scores_are_the_model_cards_for_every_turn(causal):
    model, tok, path = causal
    critic = build_critic("prm", None, {"model_path": path, "mode": "chat_turns", "batch_size": 4}, None)
    expected = [rlhflow_card(model, tok, QUERY.prompt, r.steps) for r in REQUESTS]
    assert_same(scores_of(critic), expected)


def test_a_sample_without_steps_gets_no_scores(causal):
    _, _, path = causal
    for mode in ("step_tag", "chat_turns"):
        critic = build_critic("prm", None, {"model_path": path, "mode": mode}, None)
        [crit] = checked(critic, [CritiqueRequest("empty", QUERY, [])])
        assert crit.verdicts == [] and crit.passed


# ---------------------------------------------------------------- errors at build time


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A causal LM whose tokenizer has none of the markers and no chat template."""
    tok = tokenizer(markers=[])
    return save(LlamaForCausalLM(config(tok)), tok, tmp_path_factory.mktemp("plain"))


@pytest.mark.parametrize("args, message", [
    ({"mode": "step_tag"}, r"critic.args.step_tag 'ки' is not one token of the tokenizer at .*plain"),
    ({"mode": "step_tag", "step_tag": "#", "good_token": "✓"}, r"critic.args.good_token '✓' is not one token"),
    ({"mode": "step_tag", "step_tag": "#", "bad_token": "--"}, r"critic.args.bad_token '--' is not one token .*\['-', '-'\]"),
    ({"mode": "chat_turns"}, "mode chat_turns: the tokenizer at .* has no chat template"),
    ({"mode": "token_classification"}, r"critic.args.separator '<extra_0>' is not one token"),
    ({"mode": "step_tag", "step_tag": "#", "separator": "x"}, "mode step_tag takes no separator"),
    ({"mode": "verifier"}, "critic.args.mode must be selftrain, step_tag, token_classification, chat_turns"),
    ({"mode": "step_tag", "step_tag": "#", "dtype": "int8"}, "dtype must be one of"),
])
def test_a_tokenizer_or_args_that_do_not_fit_the_mode_fail_at_build(plain, args, message):
    with pytest.raises(CriticLoadError, match=message):
        build_critic("prm", None, {"model_path": plain, **args}, None)


def test_the_selftrain_mode_takes_no_hub_args(plain):
    with pytest.raises(CriticLoadError, match="mode selftrain takes no step_tag"):
        build_critic("prm", None, {"model_path": plain, "step_tag": "ки"}, None)
