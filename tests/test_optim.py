"""The training pieces the SFT and PRM loops share: schedule, update step, right padding."""

import pytest
import torch

from selftrain.train.optim import adamw_with_schedule, optimizer_step
from selftrain.train.sft import IGNORE, collate, pad_right


def learning_rates(total: int, warmup_ratio: float, lr: float = 1.0) -> list[float]:
    model = torch.nn.Linear(2, 1)
    optim, sched = adamw_with_schedule(model, lr, 0.0, total, warmup_ratio)
    out = []
    for _ in range(total):
        out.append(optim.param_groups[0]["lr"])
        model(torch.ones(1, 2)).sum().backward()
        optimizer_step(model, optim, sched)
        assert all(p.grad is None for p in model.parameters())  # cleared for the next batch
    return out


def test_schedule_warms_up_then_decays_to_a_tenth():
    lrs = learning_rates(total=20, warmup_ratio=0.2)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # 4 warmup steps, full lr at the 4th
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))  # cosine decay from there on
    assert lrs[-1] == pytest.approx(0.1)  # 10% of lr on the last step


def test_a_run_shorter_than_one_warmup_step_still_trains():
    assert learning_rates(total=1, warmup_ratio=0.1) == [1.0]


def test_right_padding_and_collate():
    ids, mask = pad_right([[5, 6, 7], [8]], value=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_right([[]], value=0)[0].shape == (1, 1)  # never a zero-width batch
    batch = collate([([1, 2], [IGNORE, 2]), ([3], [3])], pad_id=0)
    assert batch["labels"].tolist() == [[IGNORE, 2], [3, IGNORE]]  # padding is never learned
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
