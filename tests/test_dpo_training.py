"""`train.objective: dpo` on the training ranks: reference log-probs once per round before the
first epoch, the LoRA reference through disabled adapters (the base model's log-probs, with no
second copy), `reference: base`, and FSDP training as DDP does. In-process on a one-rank
process group (FSDP shards even on one rank); the two-rank comparison needs Ray (slow)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch
from finetune_helpers import one_rank_group, tiny_policy
from transformers import AutoModelForCausalLM, AutoTokenizer

import selftrain.train.dpo as dpo
from selftrain.cluster.trainer import TrainerGroup, finetune_job
from selftrain.config import DPOConfig, LoraConfig, ResourceConfig, TrainConfig
from selftrain.runfolder.folder import write_parquet
from selftrain.runfolder.schemas import PAIR_SCHEMA
from selftrain.runfolder.storage import LocalStorage
from selftrain.train.rank_trainer import RankTrainer
from selftrain.train.sft import SFTExample, SFTSettings

CPU = torch.device("cpu")
reference_logps = dpo.reference_logps  # the real one: `counted` wraps the module's
LORA = LoraConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj", "down_proj"])
CFG = TrainConfig(objective="dpo", epochs=3, lr=1e-2, batch_size=16,
                  dpo=DPOConfig(beta=0.5, nll_weight=0.2))


def sums_pairs(out):
    """pairs.parquet of 48 sums: the right sum chosen, one off rejected."""
    rows = [{"prompt": f"{a}+{b}=", "chosen": f"{a + b}", "rejected": f"{a + b + 1}",
             "query_id": f"q{a}{b}", "difficulty": 1, "origin": "outcome",
             "chosen_id": f"c{a}{b}", "rejected_id": f"r{a}{b}"}
            for a in range(8) for b in range(6)]
    write_parquet(out, rows, schema=PAIR_SCHEMA)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    with one_rank_group(tmp):
        yield tiny_policy(tmp / "base", noise=0.05), sums_pairs(tmp / "pairs.parquet"), tmp


@pytest.fixture
def counted(monkeypatch):
    """Every call of the reference pass, with the log-probs it returned."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    real = dpo.reference_logps
    monkeypatch.setattr(dpo, "reference_logps", wrapped)
    return calls


def base_logps(base, pairs_path) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(base)
    pairs = dpo.encode_pairs(tok, pd.read_parquet(pairs_path).to_dict("records"), 256)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    return reference_logps(model, pairs, 64, tok.pad_token_id, CPU, None, 0, 1)


def test_a_dpo_round_computes_the_reference_once_and_learns_the_preference(files, counted):
    base, pairs, tmp = files
    torch.set_num_threads(1)
    cfg = replace(CFG, epochs=10)
    trainer = RankTrainer(cfg, 0, 1, CPU)
    r1 = trainer.finetune(finetune_job(cfg, init_path=str(base), train_path=pairs,
                                       out_path=tmp / "r1", seed=1))
    assert len(counted) == 1 and r1["reference_passes"] == 1  # 10 epochs, one reference pass
    torch.testing.assert_close(counted[0], base_logps(base, pairs))  # round start = base
    assert r1["steps"] == 30 and r1["examples"] == 48
    assert r1["train/rewards/accuracies"] > 0.7 and r1["train/rewards/margins"] > 0.3
    assert r1["train/logps/chosen"] > r1["train/logps/rejected"]
    assert r1["loss"] == r1["train/loss"]
    r2 = trainer.finetune(finetune_job(cfg, init_path=str(tmp / "r1"), train_path=pairs,
                                       out_path=tmp / "r2", seed=2))
    assert len(counted) == 2 and r2["reference_passes"] == 2
    # round 2's reference is round 1's policy: it already prefers the chosen side
    margin = lambda ref: (ref[:, 0] - ref[:, 2]).mean().item()  # noqa: E731
    assert margin(counted[1]) > margin(counted[0]) + 0.5


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_lora_reference_is_the_base_model_through_disabled_adapters(files, counted, strategy):
    """Round 2 continues from round 1's merged policy with `reference: base`: its reference
    pass must give the base model's log-probs; round 1 (`round_start`) the same, with a trained
    adapter switched off."""
    base, pairs, tmp = files
    torch.set_num_threads(1)
    cfg = replace(CFG, lora=LORA, strategy=strategy, dpo=replace(CFG.dpo, reference="base"))
    trainer = RankTrainer(cfg, 0, 1, CPU)
    r1 = trainer.finetune(finetune_job(cfg, init_path=str(base), train_path=pairs,
                                       out_path=tmp / f"lora-{strategy}-r1", seed=1,
                                       base=str(base)))
    trainer.finetune(finetune_job(cfg, init_path=str(tmp / f"lora-{strategy}-r1"),
                                  train_path=pairs, out_path=tmp / f"lora-{strategy}-r2", seed=2,
                                  base=str(base)))
    want = base_logps(base, pairs)
    for got in counted:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    # an adapter trained on round 1's merged policy, switched off, gives back that policy
    trainer.prepare(str(tmp / f"lora-{strategy}-r1"), seed=3)
    trainer.train([SFTExample(f"{a}+1=", f"{a + 1}") for a in range(8)],
                  SFTSettings(epochs=2, lr=3e-2, batch_size=4, seed=0))
    pairs_enc = dpo.encode_pairs(trainer.tokenizer, [{"prompt": "1+1=", "chosen": "2",
                                                      "rejected": "3"}], 64)
    args = (pairs_enc, 8, trainer.tokenizer.pad_token_id, CPU, None, 0, 1)
    with dpo.adapters_off(trainer):
        off = reference_logps(trainer.model, *args)
    on = reference_logps(trainer.model, *args)
    merged = AutoModelForCausalLM.from_pretrained(tmp / f"lora-{strategy}-r1").eval()
    torch.testing.assert_close(off, reference_logps(merged, *args), rtol=1e-5, atol=1e-4)
    assert (on - off).abs().max() > 1e-3  # the adapter does change the outputs
    # no second model for the reference: a DPO round holds what an SFT round holds
    sft = trainer.train([SFTExample(r["prompt"], r["chosen"]) for r in
                         pd.read_parquet(pairs).to_dict("records")],
                        SFTSettings(epochs=1, lr=1e-2, batch_size=16, seed=0))
    assert r1["state_mib"] <= 1.1 * sft["state_mib"] and r1["param_mib"] == sft["param_mib"]


def test_dpo_under_fsdp_trains_as_under_ddp_on_one_rank(files):
    base, pairs, tmp = files
    torch.set_num_threads(1)
    stats = {}
    for strategy in ("ddp", "fsdp"):
        cfg = replace(CFG, strategy=strategy)
        stats[strategy] = RankTrainer(cfg, 0, 1, CPU).finetune(finetune_job(
            cfg, init_path=str(base), train_path=pairs, out_path=tmp / f"one-{strategy}", seed=1))
    # (this caught FSDP's root unit left gathered by the reference pass's no_grad forward:
    # the next steps computed with stale weights, 1e-2 apart after an epoch)
    for key in dpo.FIGURES:
        assert stats["fsdp"][key] == pytest.approx(stats["ddp"][key], rel=1e-5, abs=1e-6)
    assert_close_weights(tmp / "one-fsdp", tmp / "one-ddp", atol=1e-5)


def assert_close_weights(a, b, atol: float) -> None:
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff <= atol, f"{a} vs {b}: max |diff| {diff}"


def test_dpo_on_two_ranks_fsdp_as_ddp(files, ray_cluster):
    """Two gloo ranks, each a share of the reference pass and of every batch: FSDP gives the
    DDP weights and figures; the ranks report one reference pass per round."""
    base, pairs, tmp = files
    out = {}
    for strategy in ("ddp", "fsdp"):
        cfg = replace(CFG, strategy=strategy, epochs=2, lr=1e-3,
                      resources=ResourceConfig(num_workers=2, num_cpus=1))
        group = TrainerGroup(cfg, LocalStorage(tmp))
        try:
            out[strategy] = [group.finetune(finetune_job(
                cfg, init_path=str(base if k == 1 else tmp / f"two-{strategy}-r1"),
                train_path=pairs, out_path=tmp / f"two-{strategy}-r{k}", seed=k))
                for k in (1, 2)]
        finally:
            group.shutdown()
    for k in (0, 1):
        d, f = out["ddp"][k], out["fsdp"][k]
        assert [r["reference_passes"] for r in d + f] == [k + 1] * 4
        for key in dpo.FIGURES:
            assert d[0][key] == d[1][key]  # summed over the ranks: the same on each
            assert f[0][key] == pytest.approx(d[0][key], rel=1e-4, abs=1e-4)
        # two ranks reduce gradients in another order than one, and AdamW turns a rounding
        # difference in a near-zero gradient into a step of size lr (1e-3): round 2, which
        # continues from round 1, carries round 1's differences on (as tests/test_sharded_training)
        assert_close_weights(tmp / f"two-fsdp-r{k + 1}", tmp / f"two-ddp-r{k + 1}",
                             atol=(1e-4, 5e-4)[k])
