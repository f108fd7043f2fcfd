"""`train.lora`: only adapters train, each round's checkpoint is the merged model (with the
adapter beside it), and `train.init: previous` continues from the merged policy. In-process on
a one-rank process group, under both strategies (FSDP shards even on one rank)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from finetune_helpers import logits, one_rank_group, sums_parquet, tiny_policy
from transformers import AutoModelForCausalLM, AutoTokenizer

from selftrain.config import ConfigError, LoraConfig, TrainConfig, from_dict
from selftrain.train.lora import is_adapter
from selftrain.train.rank_trainer import FinetuneJob, RankTrainer, check_setup, examples_from_rows
from selftrain.train.sft import SFTSettings
from selftrain.train.sharding import full_state

CPU = torch.device("cpu")
LORA = LoraConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj", "down_proj"])
TEXTS = ["3+4=", "7+7=", "0+5="]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    with one_rank_group(tmp):
        yield tiny_policy(tmp / "base"), sums_parquet(tmp / "train.parquet"), tmp


def settings(seed: int) -> SFTSettings:
    return SFTSettings(epochs=2, lr=1e-2, batch_size=16, seed=seed)


def job(init, train, out, seed: int) -> FinetuneJob:
    return FinetuneJob(str(init), str(train), str(out), settings(seed))


def weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_lora_round_trains_only_the_adapters_and_saves_them_merged(files, strategy):
    base, train, tmp = files
    torch.set_num_threads(1)
    trainer = RankTrainer(TrainConfig(strategy=strategy, lora=LORA), 0, 1, CPU)
    trainer.prepare(str(base), seed=1)
    before = {k: v.clone() for k, v in full_state(trainer.model).items()}
    stats = trainer.train(examples_from_rows(pd.read_parquet(train).to_dict("records")),
                          settings(1))
    after = full_state(trainer.model)
    frozen = [k for k in before if not is_adapter(k)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in before if ".lora_B." in k)
    assert stats["grad_mib"] < stats["param_mib"] / 10  # gradients and AdamW: adapters only

    trainer.save(tmp / f"ckpt-{strategy}")
    merged = AutoModelForCausalLM.from_pretrained(tmp / f"ckpt-{strategy}")
    assert merged.state_dict().keys() == weights(base).keys()  # adapter/ beside: not read
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                             tmp / f"ckpt-{strategy}" / "adapter")
    want = logits(with_adapter, TEXTS, tokenizer)
    torch.testing.assert_close(logits(merged, TEXTS, tokenizer), want, rtol=1e-4, atol=1e-4)
    plain = logits(AutoModelForCausalLM.from_pretrained(base), TEXTS, tokenizer)
    assert (want - plain).abs().max() > 1e-2  # the adapter did change the outputs


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_rounds_continue_from_the_merged_policy(files, strategy):
    """Round 2 (init previous) on the live model equals round 2 of a fresh rank started from
    round 1's checkpoint (a resumed run); round 3 from the base model equals round 1."""
    base, train, tmp = files
    torch.set_num_threads(1)
    cfg = TrainConfig(strategy=strategy, lora=LORA)
    live = RankTrainer(cfg, 0, 1, CPU)
    r1, r2, r3 = (tmp / f"{strategy}-r{k}" for k in (1, 2, 3))
    live.finetune(job(base, train, r1, seed=1))
    live.finetune(job(r1, train, r2, seed=2))
    live.finetune(job(base, train, r3, seed=1))
    fresh = RankTrainer(cfg, 0, 1, CPU)
    fresh.finetune(job(r1, train, tmp / f"{strategy}-r2-fresh", seed=2))
    for a, b in [(r2, tmp / f"{strategy}-r2-fresh"), (r3, r1)]:
        wa, wb = weights(a), weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), (a, b)
    w1, w2 = weights(r1), weights(r2)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("targets, error", [
    (["qkv_proj"], r"train\.lora\.target_modules \['qkv_proj'\]"),
    (["lm_head"], r"train\.lora\.target_modules: lm_head shares its weight"),
])
def test_lora_targets_are_checked_before_any_weight_is_read(files, targets, error):
    base, _, _ = files
    cfg = TrainConfig(strategy="fsdp", lora=LoraConfig(target_modules=targets))
    with pytest.raises(ConfigError, match=error):
        check_setup(cfg, str(base))  # what a run checks before Ray starts
    with pytest.raises(ConfigError, match=error):  # and a rank, building the model
        RankTrainer(cfg, 0, 1, CPU).prepare(str(base), seed=0)
    check_setup(TrainConfig(strategy="fsdp", lora=LORA), str(base))


@pytest.mark.parametrize("train, key", [
    ({"lora": {"r": 0}}, "train.lora.r"),
    ({"lora": {"dropout": 1.0}}, "train.lora.dropout"),
    ({"lora": {"target_modules": []}}, "train.lora.target_modules"),
    ({"strategy": "zero3"}, "train.strategy"),
    ({"resources": {"num_workers": 2, "num_gpus": 0.5}}, "train.resources.num_gpus"),
])
def test_a_training_setup_that_cannot_run_is_a_config_error(train, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({"train": train}, source="exp.yaml")


def test_lora_and_fsdp_are_read_from_yaml():
    cfg = from_dict({"train": {"strategy": "fsdp", "activation_checkpointing": True,
                               "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}})
    assert cfg.train.strategy == "fsdp" and cfg.train.activation_checkpointing
    assert cfg.train.lora == LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    assert from_dict({}).train.lora is None and from_dict({}).train.strategy == "ddp"
