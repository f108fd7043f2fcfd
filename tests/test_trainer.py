"""The run's training ranks: started once, kept across rounds, restarted whole when one dies."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest
import torch
from conftest import small_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from selftrain.cluster.trainer import TrainerGroup, examples_from_rows, finetune_job
from selftrain.config import ResourceConfig, TrainConfig
from selftrain.models.source import resolve_model
from selftrain.runfolder.folder import write_parquet
from selftrain.runfolder.storage import LocalStorage
from selftrain.tasks import make_task
from selftrain.train.sft import train_sft


@pytest.fixture(scope="module")
def data(tmp_path_factory, model_cache):
    """The base model and a training set of solver-written solutions."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = small_config(tmp, model_cache)
    task = make_task(cfg.task.name, **cfg.task.args)
    rows = [{"prompt": q.prompt, "completion": sol, "loss_mask": None}
            for q in task.queries("train") for sol in task.reference_solutions(q, k=2)]
    write_parquet(tmp / "train.parquet", rows)
    return resolve_model(cfg, task), tmp / "train.parquet", tmp


def weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def in_process(base: str, train_path, cfg: TrainConfig, seed: int) -> dict[str, torch.Tensor]:
    """The same job as the plain SFT loop in this process, the reference."""
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    job = finetune_job(cfg, init_path=base, train_path=train_path, out_path="-", seed=seed)
    rows = pd.read_parquet(train_path).to_dict("records")
    train_sft(model, tokenizer, examples_from_rows(rows), job.settings, torch.device("cpu"))
    return model.state_dict()


def finetune_on_a_fresh_group(cfg: TrainConfig, tmp, **job) -> list[dict]:
    """One finetune on a group started for it (what a resumed or restarted run does)."""
    group = TrainerGroup(cfg, LocalStorage(tmp))
    try:
        return group.finetune(finetune_job(cfg, **job))
    finally:
        group.shutdown()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_rounds_on_one_group_equal_the_plain_sft_loop(data, ray_cluster):
    base, train_path, tmp = data
    cfg = TrainConfig(epochs=2, lr=3e-4, resources=ResourceConfig(num_workers=1, num_cpus=1))
    group = TrainerGroup(cfg, LocalStorage(tmp), warm_with=base)  # the warm-up changes nothing
    try:
        pid = group.info()[0]["pid"]
        ranks = group.finetune(finetune_job(cfg, init_path=base, train_path=train_path,
                                            out_path=tmp / "r1", seed=1))
        assert ranks[0]["steps"] > 0 and ranks[0]["examples"] == len(pd.read_parquet(train_path))
        assert_same(weights(tmp / "r1"), in_process(base, train_path, cfg, seed=1))
        # round 2 continues from round 1 (train.init: previous) on the same process
        group.finetune(finetune_job(cfg, init_path=str(tmp / "r1"), train_path=train_path,
                                    out_path=tmp / "r2", seed=2))
        # round 3 starts from the base model again (train.init: base)
        group.finetune(finetune_job(cfg, init_path=base, train_path=train_path,
                                    out_path=tmp / "r3", seed=1))
        assert group.info()[0]["pid"] == pid and group.restarts == 0
    finally:
        group.shutdown()
    assert_same(weights(tmp / "r3"), weights(tmp / "r1"))
    # what a resumed run does for round 2
    finetune_on_a_fresh_group(cfg, tmp, init_path=str(tmp / "r1"), train_path=train_path,
                              out_path=tmp / "r2-fresh", seed=2)
    assert_same(weights(tmp / "r2-fresh"), weights(tmp / "r2"))


def test_a_rank_killed_mid_finetune_is_restarted_and_the_round_redone(data, ray_cluster):
    base, train_path, tmp = data
    cfg = TrainConfig(epochs=40, lr=3e-4, resources=ResourceConfig(num_workers=1, num_cpus=1))
    job = finetune_job(cfg, init_path=base, train_path=train_path, out_path=tmp / "k", seed=3)
    group = TrainerGroup(cfg, LocalStorage(tmp))
    try:
        pid = group.info()[0]["pid"]
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(ranks=group.finetune(job)))
        worker.start()
        time.sleep(3)
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=600)
        assert group.restarts == 1 and group.info()[0]["pid"] != pid
    finally:
        group.shutdown()
    finetune_on_a_fresh_group(cfg, tmp, init_path=base, train_path=train_path,
                              out_path=tmp / "k-ref", seed=3)
    assert_same(weights(tmp / "k"), weights(tmp / "k-ref"))


def test_two_ranks_train_their_shards_in_one_process_group(data, ray_cluster):
    base, train_path, tmp = data
    cfg = TrainConfig(epochs=1, lr=3e-4, resources=ResourceConfig(num_workers=2, num_cpus=1))
    ranks = finetune_on_a_fresh_group(cfg, tmp, init_path=base, train_path=train_path,
                                      out_path=tmp / "ddp", seed=0)
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    changed = [not torch.equal(a, b) for a, b in zip(weights(tmp / "ddp").values(),
                                                       weights(base).values())]
    assert any(changed)
