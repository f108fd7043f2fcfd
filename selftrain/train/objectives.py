"""What a round's finetune learns (`train.objective`), pluggable by name.

An objective reads the training data the previous round's filter wrote (`data_file` in that
round's folder) and trains the policy on one rank: it brings the model to the weights it needs
(`RankTrainer.prepare`), runs its loop, and returns the rank's stats; `RankTrainer` saves the
checkpoint after it. Built-ins: `sft` (train.parquet, selftrain/train/rank_trainer.py) and `dpo`
(pairs.parquet, selftrain/train/dpo.py); others register with `@OBJECTIVES.register("name")` or an
entry point in group `selftrain.train.objectives`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from selftrain.registry import Registry


@runtime_checkable
class Objective(Protocol):
    data_file: str
    """The file of the previous round's folder the objective learns from."""

    def train(self, trainer: Any, job: Any) -> dict[str, Any]:
        """Prepare the rank's model (`trainer`, a `selftrain.train.rank_trainer.RankTrainer`),
        train it on `job` (a `FinetuneJob`); this rank's stats (`steps`, `loss`, `tokens`,
        `examples`, ...). Typed loosely so this module stays below the rank trainer that calls
        it."""
        ...


OBJECTIVES: Registry[type] = Registry("objective", builtins={
    "sft": "selftrain.train.rank_trainer:SFTObjective",
    "dpo": "selftrain.train.dpo:DPOObjective",
})


def make_objective(name: str) -> Objective:
    """The objective `train.objective` names, checked against the protocol once, here."""
    objective = OBJECTIVES.resolve(name)()
    if not isinstance(objective, Objective):
        raise OBJECTIVES.error(f"objective {name!r} ({type(objective).__name__}) lacks "
                               f"`data_file` or `train(trainer, job)`")
    return objective
