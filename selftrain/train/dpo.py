"""Direct preference optimisation (`train.objective: dpo`): the loss over sequence log-probs,
the figures under TRL's names, and the round's loop on the training ranks.

The loss compares how much the policy raised each side of a pair over the reference model:
    h = beta * ((log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r)))
sigmoid (DPO, Rafailov et al. 2023): -log sigmoid(h); ipo (Azar et al. 2023): on log-probs
averaged over each completion's tokens (as TRL does for IPO), (h / beta - 1 / (2 beta))^2.
Iterative RPO (Pang et al. 2024) adds `nll_weight` times the chosen side's negative
log-likelihood per token, which keeps the winner's probability from falling while the margin
grows. Log-probs are sums over the completion's tokens (prompt tokens are not learned).

The reference log-probs of every pair are computed once per round, before the first epoch, on
the training ranks themselves (each rank a share of the pairs, then summed over the ranks):
reference `round_start` is the weights the round starts from, `base` the base model's. Under
LoRA they come from the same model with its adapters switched off (peft's `disable_adapter()`),
so no second copy of the model is ever held.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from selftrain.config import DPOConfig
from selftrain.train.optim import state_mib
from selftrain.train.sft import (
    IGNORE,
    SFTExample,
    SFTSettings,
    collate,
    run_epochs,
    tokenize_example,
)
from selftrain.train.sharding import reshard

if TYPE_CHECKING:
    from selftrain.train.rank_trainer import FinetuneJob, RankTrainer

FIGURES = ["train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
           "train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected"]
"""TRL's names of the DPO figures; each a mean over the pairs of the round's last epoch."""


@dataclass
class SideLogps:
    """Log-probs of one side of a batch of pairs: the sum over each completion's tokens, and
    how many tokens were summed."""

    sum: torch.Tensor
    tokens: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.tokens.clamp(min=1)


@dataclass
class PairLoss:
    """The batch's loss (a scalar to backpropagate) and the per-pair values its figures use."""

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(policy_c: SideLogps, policy_r: SideLogps, ref_c: SideLogps, ref_r: SideLogps,
             cfg: DPOConfig) -> PairLoss:
    """The loss of a batch of pairs from the four log-probs (pure: no model here). Rewards are
    beta times the policy's gain over the reference, summed over tokens, as TRL reports them."""
    chosen_rewards = cfg.beta * (policy_c.sum - ref_c.sum)
    rejected_rewards = cfg.beta * (policy_r.sum - ref_r.sum)
    if cfg.loss == "sigmoid":
        losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    else:  # ipo: the margin of per-token log-ratios is pulled to 1 / (2 beta)
        h = (policy_c.mean - ref_c.mean) - (policy_r.mean - ref_r.mean)
        losses = (h - 1 / (2 * cfg.beta)) ** 2
    if cfg.nll_weight:
        losses = losses - cfg.nll_weight * policy_c.mean  # IRPO: length-normalised NLL
    return PairLoss(losses.mean(), losses.detach(), chosen_rewards.detach(),
                    rejected_rewards.detach())


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> SideLogps:
    """Per row, the summed log-prob of its learned tokens (labels != -100), each predicted from
    the position before it (the causal shift transformers' own loss makes)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    learned = labels != IGNORE
    picked = torch.gather(logits.log_softmax(-1), 2,
                          labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return SideLogps((picked * learned).sum(-1), learned.sum(-1))


# -- pairs on a rank ------------------------------------------------------------------------


@dataclass
class EncodedPair:
    chosen: tuple[list[int], list[int]]
    rejected: tuple[list[int], list[int]]


def encode_pairs(tokenizer, rows: Sequence[dict[str, Any]], max_length: int) -> list[EncodedPair]:
    """Rows of pairs.parquet as token ids and labels: prompt + each side, learned as SFT
    learns a completion (the side plus EOS, less its masked spans: `<side>_mask`, an agent's
    observations; None or an array of [start, end] arrays as pandas reads it)."""
    def side(row: dict[str, Any], key: str) -> tuple[list[int], list[int]]:
        mask = row.get(f"{key}_mask")
        spans = [(int(a), int(b)) for a, b in (mask if mask is not None else [])]
        return tokenize_example(tokenizer, SFTExample(row["prompt"], row[key], spans), max_length)

    return [EncodedPair(side(r, "chosen"), side(r, "rejected")) for r in rows]


def forward_pairs(model: torch.nn.Module, pairs: Sequence[EncodedPair], pad_id: int,
                  device: torch.device, autocast: torch.dtype | None) -> tuple[SideLogps, SideLogps]:
    """Chosen and rejected log-probs of `pairs` in ONE forward (chosen rows first): DDP and
    FSDP expect one forward per backward."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    both = sequence_logps(logits, batch["labels"])
    n = len(pairs)
    return (SideLogps(both.sum[:n], both.tokens[:n]), SideLogps(both.sum[n:], both.tokens[n:]))


def reference_logps(model: torch.nn.Module, pairs: Sequence[EncodedPair], batch_size: int,
                    pad_id: int, device: torch.device, autocast: torch.dtype | None,
                    rank: int, world_size: int) -> torch.Tensor:
    """[n, 4] (chosen sum, chosen tokens, rejected sum, rejected tokens) of every pair under
    `model`, each rank computing every world_size-th pair and the ranks summing their parts.
    Every rank runs as many forwards (FSDP gathers layers in each), padding with a repeat."""
    import torch.distributed as dist

    n = len(pairs)
    mine = list(range(rank, n, world_size))
    per_rank = math.ceil(n / world_size)
    out = torch.zeros((n, 4), dtype=torch.float64)
    with torch.no_grad():
        for b in range(0, per_rank, batch_size):
            idx = mine[b : b + batch_size]
            todo = idx or [0]  # a rank with nothing left still takes part in the forward
            c, r = forward_pairs(model, [pairs[i] for i in todo], pad_id, device, autocast)
            if idx:
                out[idx] = torch.stack([c.sum, c.tokens, r.sum, r.tokens], -1).double().cpu()
    reshard(model)
    if world_size > 1:
        out = out.to(device)
        dist.all_reduce(out)
        out = out.cpu()
    return out


def adapters_off(trainer: RankTrainer) -> contextlib.AbstractContextManager:
    """The reference under LoRA: the same model with its adapters disabled (peft); else a
    no-op (the model then holds the reference's weights itself)."""
    if trainer.adapters is None:
        return contextlib.nullcontext()
    return trainer.adapters.peft_model.disable_adapter()


# -- the round's loop -----------------------------------------------------------------------


@dataclass
class Figures:
    """Sums over this rank's pairs of the last epoch, summed over the ranks at the end."""

    values: torch.Tensor  # loss, reward c, reward r, margin, accuracy, logp c, logp r, pairs

    @classmethod
    def empty(cls) -> Figures:
        return cls(torch.zeros(len(FIGURES) + 1, dtype=torch.float64))

    def add(self, out: PairLoss, policy_c: SideLogps, policy_r: SideLogps) -> None:
        margins = out.chosen_rewards - out.rejected_rewards
        parts = [out.losses, out.chosen_rewards, out.rejected_rewards, margins,
                 (margins > 0).double(), policy_c.sum.detach(), policy_r.sum.detach()]
        self.values += torch.tensor([float(p.double().sum()) for p in parts] + [len(out.losses)],
                                    dtype=torch.float64)

    def means(self, device: torch.device, world_size: int) -> dict[str, float]:
        import torch.distributed as dist

        values = self.values.to(device)
        if world_size > 1:
            dist.all_reduce(values)
        values = values.cpu()
        count = max(1.0, float(values[-1]))
        return {key: float(values[i]) / count for i, key in enumerate(FIGURES)}


@dataclass
class _DPOBatches:
    """DPO's step: both sides of the batch's pairs in one forward, the loss against their
    reference log-probs; tokens and the epoch's figures counted."""

    model: torch.nn.Module
    pairs: Sequence[EncodedPair]
    reference: torch.Tensor
    cfg: DPOConfig
    pad_id: int
    device: torch.device
    autocast: torch.dtype | None
    tokens: int = 0
    figures: Figures = field(default_factory=Figures.empty)
    _last: tuple[PairLoss, SideLogps, SideLogps] | None = None

    def new_epoch(self) -> None:
        self.figures = Figures.empty()

    def loss(self, idx: list[int]) -> torch.Tensor:
        policy_c, policy_r = forward_pairs(self.model, [self.pairs[i] for i in idx],
                                           self.pad_id, self.device, self.autocast)
        ref = self.reference[idx].to(self.device)
        out = dpo_loss(policy_c, policy_r, SideLogps(ref[:, 0], ref[:, 1]),
                       SideLogps(ref[:, 2], ref[:, 3]), self.cfg)
        self._last = (out, policy_c, policy_r)
        return out.loss

    def done(self, loss: torch.Tensor) -> None:
        assert self._last is not None
        out, policy_c, policy_r = self._last
        self.figures.add(out, policy_c, policy_r)
        self.tokens += int(policy_c.tokens.sum() + policy_r.tokens.sum())


def train_dpo(model: torch.nn.Module, tokenizer, pairs: Sequence[EncodedPair],
              reference: torch.Tensor, settings: SFTSettings, cfg: DPOConfig,
              device: torch.device, rank: int = 0, world_size: int = 1,
              autocast: torch.dtype | None = None) -> dict[str, Any]:
    """The DPO loop on this rank's shard of `pairs` (every rank takes the same steps, the
    optimiser's loop of `selftrain.train.sft`); `reference`: `reference_logps` of the same
    pairs. Returns this rank's stats and the figures of the last epoch (over all ranks)."""
    if not pairs:
        return {"steps": 0, "loss": float("nan"), "tokens": 0}
    batches = _DPOBatches(model, pairs, reference, cfg, tokenizer.pad_token_id, device, autocast)
    step, optim = run_epochs(model, len(pairs), batches, settings, rank, world_size)
    means = batches.figures.means(device, world_size)
    return {"steps": step, "loss": means["train/loss"], "tokens": batches.tokens, **means,
            **state_mib(model, optim)}


class DPOObjective:
    """`train.objective: dpo`: learns from the previous round's pairs.parquet."""

    data_file = "pairs.parquet"

    def train(self, trainer: RankTrainer, job: FinetuneJob) -> dict[str, Any]:
        """Reference log-probs first (the reference's weights, or the round's start with the
        adapters off), then the model at the round's start, then the epochs."""
        import pandas as pd

        from selftrain.train.sharding import for_training

        assert job.dpo is not None, "a dpo job carries train.dpo"
        rows = pd.read_parquet(job.train_path).to_dict("records")
        trainer.prepare(job.reference_path or job.init_path, job.settings.seed)
        pairs = encode_pairs(trainer.tokenizer, rows, job.settings.max_length)
        with adapters_off(trainer):
            reference = reference_logps(trainer.model, pairs, job.settings.batch_size,
                                        trainer.tokenizer.pad_token_id, trainer.device,
                                        trainer.autocast, trainer.rank, trainer.world_size)
        trainer.reference_passes += 1
        trainer.prepare(job.init_path, job.settings.seed)  # reads nothing when it is the same
        trainer.weights = None  # from here the model departs from every checkpoint
        model = for_training(trainer.model, trainer.cfg.strategy, trainer.world_size)
        stats = train_dpo(model, trainer.tokenizer, pairs, reference, job.settings, job.dpo,
                          trainer.device, trainer.rank, trainer.world_size, trainer.autocast)
        cache = reference.numel() * reference.element_size() / 2**20  # held through the epochs
        return stats | {"examples": len(rows), "reference_passes": trainer.reference_passes,
                        "reference_mib": round(cache, 6)}
