"""The DPO loss and its figures equal a hand computation from a tiny model's logits, and
`train.dpo` is checked when the config loads."""

from __future__ import annotations

import math

import pytest
import torch

from selftrain.config import ConfigError, DPOConfig, TinyModelConfig, load_config
from selftrain.models.tiny_model import build_char_tokenizer, build_tiny_llama
from selftrain.train.dpo import (
    Figures,
    SideLogps,
    dpo_loss,
    encode_pairs,
    forward_pairs,
    reference_logps,
)

PAIRS = [{"prompt": "3+4=", "chosen": "7", "rejected": "12"},
         {"prompt": "5+5=", "chosen": "10", "rejected": "9 and more"}]


@pytest.fixture(scope="module")
def models():
    tok = build_char_tokenizer()
    policy = build_tiny_llama(TinyModelConfig(seed=1), len(tok), tok).eval()
    reference = build_tiny_llama(TinyModelConfig(seed=2), len(tok), tok).eval()
    return tok, policy, reference


def hand_logp(model, tok, prompt: str, completion: str) -> tuple[float, int]:
    """log p(completion + EOS | prompt), one unpadded sequence, token by token."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0]
    total = 0.0
    for j, t in enumerate(c):
        total += torch.log_softmax(logits[len(p) + j - 1].double(), -1)[t].item()
    return total, len(c)


def model_logps(models):
    tok, policy, reference = models
    pairs = encode_pairs(tok, PAIRS, 256)
    with torch.no_grad():
        pc, pr = forward_pairs(policy, pairs, tok.pad_token_id, torch.device("cpu"), None)
    ref = reference_logps(reference, pairs, 1, tok.pad_token_id, torch.device("cpu"), None, 0, 1)
    return pc, pr, SideLogps(ref[:, 0], ref[:, 1]), SideLogps(ref[:, 2], ref[:, 3])


def test_sigmoid_loss_rewards_and_margins_equal_a_hand_computation(models):
    tok, policy, reference = models
    pc, pr, rc, rr = model_logps(models)
    cfg = DPOConfig(beta=0.4, nll_weight=0.0)
    out = dpo_loss(pc, pr, rc, rr, cfg)
    losses, chosen, rejected = [], [], []
    for i, row in enumerate(PAIRS):
        lpc, nc = hand_logp(policy, tok, row["prompt"], row["chosen"])
        lpr, _ = hand_logp(policy, tok, row["prompt"], row["rejected"])
        lrc, _ = hand_logp(reference, tok, row["prompt"], row["chosen"])
        lrr, _ = hand_logp(reference, tok, row["prompt"], row["rejected"])
        assert pc.sum[i].item() == pytest.approx(lpc, abs=1e-4) and pc.tokens[i] == nc
        assert rr.sum[i].item() == pytest.approx(lrr, abs=1e-4)
        h = 0.4 * ((lpc - lrc) - (lpr - lrr))
        losses.append(-math.log(1 / (1 + math.exp(-h))))
        chosen.append(0.4 * (lpc - lrc))
        rejected.append(0.4 * (lpr - lrr))
    assert out.loss.item() == pytest.approx(sum(losses) / 2, abs=1e-4)
    assert out.chosen_rewards.tolist() == pytest.approx(chosen, abs=1e-4)
    assert out.rejected_rewards.tolist() == pytest.approx(rejected, abs=1e-4)

    figures = Figures.empty()
    figures.add(out, pc, pr)
    means = figures.means(torch.device("cpu"), 1)
    margins = [c - r for c, r in zip(chosen, rejected)]
    assert means["train/rewards/margins"] == pytest.approx(sum(margins) / 2, abs=1e-4)
    assert means["train/rewards/accuracies"] == sum(m > 0 for m in margins) / 2
    assert means["train/loss"] == pytest.approx(sum(losses) / 2, abs=1e-4)
    assert means["train/logps/rejected"] == pytest.approx(pr.sum.mean().item(), abs=1e-5)


def test_ipo_and_the_nll_term_equal_a_hand_computation(models):
    tok, policy, reference = models
    pc, pr, rc, rr = model_logps(models)
    beta = 0.5
    want_ipo, want_nll = [], []
    for row in PAIRS:
        (lpc, nc), (lpr, nr) = (hand_logp(policy, tok, row["prompt"], row[k])
                                for k in ("chosen", "rejected"))
        (lrc, _), (lrr, _) = (hand_logp(reference, tok, row["prompt"], row[k])
                              for k in ("chosen", "rejected"))
        h = (lpc - lrc) / nc - (lpr - lrr) / nr  # per-token log-ratios
        want_ipo.append((h - 1 / (2 * beta)) ** 2)
        sig = -math.log(1 / (1 + math.exp(-beta * ((lpc - lrc) - (lpr - lrr)))))
        want_nll.append(sig - 0.7 * lpc / nc)
    ipo = dpo_loss(pc, pr, rc, rr, DPOConfig(beta=beta, loss="ipo"))
    assert ipo.losses.tolist() == pytest.approx(want_ipo, abs=1e-4)
    rpo = dpo_loss(pc, pr, rc, rr, DPOConfig(beta=beta, nll_weight=0.7))
    assert rpo.losses.tolist() == pytest.approx(want_nll, abs=1e-4)


def test_the_loss_gradient_raises_the_chosen_side(models):
    """One gradient step on the DPO loss moves the policy's margin up."""
    tok, policy, reference = models
    model = build_tiny_llama(TinyModelConfig(seed=1), len(tok), tok)
    pairs = encode_pairs(tok, PAIRS, 256)
    ref = reference_logps(reference, pairs, 8, tok.pad_token_id, torch.device("cpu"), None, 0, 1)
    rc, rr = SideLogps(ref[:, 0], ref[:, 1]), SideLogps(ref[:, 2], ref[:, 3])
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    margins = []
    for _ in range(2):
        pc, pr = forward_pairs(model, pairs, tok.pad_token_id, torch.device("cpu"), None)
        out = dpo_loss(pc, pr, rc, rr, DPOConfig(beta=0.1))
        margins.append((out.chosen_rewards - out.rejected_rewards).mean().item())
        out.loss.backward()
        optim.step()
        optim.zero_grad()
    assert margins[1] > margins[0]


@pytest.mark.parametrize("override, words", [
    ("train.dpo.beta=0", "train.dpo.beta"),
    ("train.dpo.pairs_per_query=0", "pairs_per_query"),
    ("train.dpo.loss=hinge", "train.dpo.loss"),
    ("train.dpo.reference=previous", "train.dpo.reference"),
])
def test_train_dpo_is_checked_when_the_config_loads(tmp_path, override, words):
    path = tmp_path / "exp.yaml"
    path.write_text("experiment: e\ntrain: {objective: dpo}\n")
    assert load_config(path).train.objective == "dpo"
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_config(path, [override])


def test_an_unknown_objective_stops_in_the_preflight(tmp_path):
    """The objective's name is its registry's to check, before Ray starts."""
    from selftrain.loop.checks import preflight

    cfg = load_config("configs/countdown_rs.yaml", ["train.objective=ppo", f"run_root={tmp_path}"])
    with pytest.raises(ConfigError, match="key train.objective must be one of dpo, sft, got 'ppo'"):
        preflight(cfg, "exp.yaml")
