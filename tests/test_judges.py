"""Semantic equivalence judges with real models and a real server: a tiny randomly initialised
DeBERTa pair classifier built here (nothing downloads), checked against its own logits, and
the LM judge asking a fake OpenAI-compatible server (tests/fake_openai.py)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from fake_openai import MODEL, serving
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from selftrain.judges import build_judge
from selftrain.models.tiny_model import build_char_tokenizer

GROUPS = [["3+4=7", "4+3=7", "2*5=10", "3+4=7"], ["9-1=8", "8=9-1", "1+7=8"]]


def components(texts: list[str], same: set[tuple[str, str]]) -> list[int]:
    """Labels of the connected components, by depth-first search (an independent check of
    the union-find in selftrain.judges)."""
    label: dict[int, int] = {}
    for start in range(len(texts)):
        if start in label:
            continue
        label[start], stack = len(set(label.values())), [start]
        while stack:
            i = stack.pop()
            for j in range(len(texts)):
                a, b = sorted((texts[i], texts[j]))
                if j not in label and (a == b or (a, b) in same):
                    label[j] = label[start]
                    stack.append(j)
    return [label[i] for i in range(len(texts))]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    tokenizer = build_char_tokenizer()
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32,
                             max_position_embeddings=64, num_labels=2,
                             pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pair-classifier")
    DebertaV2ForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_classifier_judge_follows_the_classifiers_logits(classifier_dir):
    tokenizer = build_char_tokenizer()
    model = DebertaV2ForSequenceClassification.from_pretrained(classifier_dir).eval()
    pairs = sorted({tuple(sorted((a, b))) for g in GROUPS for a in g for b in g if a != b})
    prob = {}
    for a, b in pairs:  # one pair at a time, no padding: P(same) = softmax(logits)[1] by hand
        with torch.no_grad():
            logits = model(**tokenizer(a, b, return_tensors="pt")).logits[0].tolist()
        prob[a, b] = math.exp(logits[1]) / (math.exp(logits[0]) + math.exp(logits[1]))
    # halfway between two neighbouring probabilities: about half the pairs are "same", and
    # none lies within float noise of the threshold
    ordered = sorted(prob.values())
    threshold = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    same = {p for p, v in prob.items() if v >= threshold}
    assert 0 < len(same) < len(pairs)

    judge = build_judge("classifier", None, {"model": str(classifier_dir), "threshold": threshold,
                                             "batch_size": 3}, task=None)
    # batched (padded) and one-by-one probabilities agree
    assert judge.same_probability(pairs) == pytest.approx([prob[p] for p in pairs], abs=1e-5)
    assert judge.classes(GROUPS) == [components(g, same) for g in GROUPS]


def test_the_lm_judge_asks_each_pair_once_and_reads_yes_as_same():
    def answer(prompt: str) -> str:
        a, b = re.findall(r"Answer [AB]:\n(.*)\n", prompt + "\n")
        return "Yes." if a.split("=")[-1] == b.split("=")[-1] else "no"

    with serving(answer) as server:
        judge = build_judge("lm", None, {"base_url": server.base_url, "model": MODEL}, task=None)
        labels = judge.classes(GROUPS)
    # same result (the text after "=") is one class; "8=9-1" ends in "9-1"
    assert labels == [[0, 0, 1, 0], [0, 1, 0]]
    distinct_pairs = 3 + 3  # {3+4=7, 4+3=7, 2*5=10} and {9-1=8, 8=9-1, 1+7=8}
    assert len(server.seen) == distinct_pairs


def test_a_judge_typo_fails_the_preflight_before_ray_starts(tmp_path):
    from selftrain.config import ConfigError, load_config
    from selftrain.loop.checks import preflight

    cfg = load_config("configs/countdown_rs.yaml", ["judge.name=minilm", f"run_root={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown judge 'minilm'; known judges: .*embedding"):
        preflight(cfg, "countdown_rs.yaml")


def test_the_in_process_lm_judge_reads_yes_against_no_from_the_logits(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from selftrain.judges.lm import TEMPLATE

    tokenizer = build_char_tokenizer()
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=256)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    pairs = sorted({tuple(sorted((a, b))) for g in GROUPS for a in g for b in g if a != b})
    last = {}
    for a, b in pairs:  # one prompt at a time, no padding: the next-token logits
        with torch.no_grad():
            ids = tokenizer(TEMPLATE.format(a=a, b=b), return_tensors="pt")
            last[a, b] = model(**ids).logits[0, -1]
    # a random model has no opinion: take as "yes" and "no" two letters on which its
    # preference differs between pairs, so both verdicts occur
    letters = "abcdefghijklmnopqrstuvwxyz"
    yes_word, no_word = next((u, v) for u in letters for v in letters if u != v and 0 < sum(
        float(x[tokenizer.convert_tokens_to_ids(u)] - x[tokenizer.convert_tokens_to_ids(v)]) > 0
        for x in last.values()) < len(pairs))
    y, n = tokenizer.convert_tokens_to_ids([yes_word, no_word])
    margin = {p: float(x[y] - x[n]) for p, x in last.items()}

    judge = build_judge("lm-local", None, {"model": str(tmp_path), "yes": yes_word + "es",
                                           "no": no_word + "o", "batch_size": 4}, task=None)
    # batched with left padding: the same margins
    assert judge.yes_margin(pairs) == pytest.approx([margin[p] for p in pairs], abs=1e-4)
    same = {p for p, m in margin.items() if m > 0}
    assert 0 < len(same) < len(pairs)
    assert judge.classes(GROUPS) == [components(g, same) for g in GROUPS]
    with pytest.raises(Exception, match="start with the same token"):
        build_judge("lm-local", None, {"model": str(tmp_path), "yes": " yes", "no": " no"},
                    task=None).classes([["a", "b"]])
