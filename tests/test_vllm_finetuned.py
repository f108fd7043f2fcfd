"""Checkpoints of FSDP and LoRA rounds load in vLLM unchanged: the consolidated FSDP checkpoint
starts an engine, the merged LoRA checkpoint (its adapter/ folder beside the weights) is swapped
into it in place, and vLLM's greedy texts equal the transformers backend's on each. Runs in
.venv-vllm (scripts/test_vllm.sh); skipped where vLLM is not installed."""

from __future__ import annotations

import pytest
import torch
from conftest import require_vllm
from finetune_helpers import one_rank_group, sums_parquet, tiny_policy

from selftrain.backends import SamplingConfig, make_backend
from selftrain.config import LoraConfig, TrainConfig
from selftrain.train.rank_trainer import FinetuneJob, RankTrainer
from selftrain.train.sft import SFTSettings

PROMPTS = ["3+4=", "7+6=", "1+0=", "5+5="]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A round's checkpoint under FSDP and under LoRA, from the same base and data."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("finetuned")
    base, train = tiny_policy(tmp / "base", noise=0.1), sums_parquet(tmp / "train.parquet")
    settings = SFTSettings(epochs=4, lr=1e-2, batch_size=16, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_rank_group(tmp):  # gone before vLLM starts its own
            for name, cfg in [("fsdp", TrainConfig(strategy="fsdp")),
                              ("lora", TrainConfig(lora=LoraConfig(r=8, alpha=32.0)))]:
                RankTrainer(cfg, 0, 1, torch.device("cpu")).finetune(
                    FinetuneJob(str(base), str(train), str(tmp / name), settings))
    finally:
        torch.set_num_threads(threads)
    assert (tmp / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    return {"fsdp": tmp / "fsdp", "lora": tmp / "lora"}


def texts(backend) -> list[str]:
    return [gens[0].text for gens in backend.generate(PROMPTS, GREEDY, seed=0)]


def test_vllm_serves_fsdp_and_lora_checkpoints_as_transformers_does(checkpoints):
    want = {name: texts(make_backend("hf", str(path))) for name, path in checkpoints.items()}
    assert want["fsdp"] != want["lora"]  # else the swap below would show nothing
    engine = make_backend("vllm", str(checkpoints["fsdp"]))
    try:
        assert texts(engine) == want["fsdp"]
        engine.load_weights(str(checkpoints["lora"]))
        assert texts(engine) == want["lora"]
    finally:
        engine.shutdown()
