"""LoRA (`train.lora`, through peft): each round trains small adapters beside frozen weights,
then merges them in, so the round's checkpoint is a plain model that every backend loads.

peft puts a LoRA layer around each targeted linear layer, in place: the weight `X.weight`
becomes `X.base_layer.weight`, beside `X.lora_A.default.weight` (r x in) and
`X.lora_B.default.weight` (out x r). The merged weight is `W + (B @ A) * scaling`, peft's own
`get_delta_weight` for a linear layer, with peft's scaling of each layer (alpha / r).

Each round starts a fresh adapter (A drawn as peft draws it, Kaiming-uniform, B zero, so it
starts as a no-op) on the weights the round starts from: the base model, or under
`train.init: previous` the previous round's merged policy. The draw is seeded by the round's
seed, so a round redone after a crash, or in a resumed run, starts from the same adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from selftrain.config import ConfigError, LoraConfig

ADAPTER = "default"  # peft's name for a model's only adapter


@dataclass
class Adapters:
    peft_model: Any
    """The peft model around the policy: it saves the adapter in peft's format."""
    scaling: dict[str, float]
    """Name of each LoRA layer -> the factor of its update (alpha / r)."""


def add_adapters(model: torch.nn.Module, cfg: LoraConfig) -> Adapters:
    """LoRA layers around `cfg.target_modules` of `model`, in place; only they will train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    config = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                            target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"train.lora.target_modules {cfg.target_modules}: {err}") from None
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    for name, layer in layers.items():
        if not isinstance(layer, LoraLinear) or layer.fan_in_fan_out:
            raise ConfigError(f"train.lora.target_modules: {name} is a "
                             f"{type(layer.get_base_layer()).__name__}; only linear layers "
                             f"(nn.Linear) can take adapters here")
    shared = _tied_targets(model, layers)
    if shared:
        raise ConfigError(f"train.lora.target_modules: {shared[0]} shares its weight with another "
                         f"layer (tied embeddings); merging an adapter into it would change both. "
                         f"Leave it out of the targets")
    return Adapters(peft_model, {name: float(m.scaling[ADAPTER]) for name, m in layers.items()})


def _tied_targets(model: torch.nn.Module, layers: dict[str, Any]) -> list[str]:
    """LoRA layers whose base weight is also another module's weight."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return [name for name, m in layers.items() if seen[id(m.get_base_layer().weight)] > 1]


def fresh_adapter_state(adapters: Adapters, shapes: dict[str, torch.Size],
                        seed: int) -> dict[str, torch.Tensor]:
    """A new adapter as whole tensors: each A Kaiming-uniform (a=sqrt(5)) as peft draws it, in
    a fixed order from a generator seeded with `seed`; each B zero. `shapes`: name -> shape of
    the model's tensors (global shapes, whether or not the model is sharded)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for layer in sorted(adapters.scaling):
        a, b = f"{layer}.lora_A.{ADAPTER}.weight", f"{layer}.lora_B.{ADAPTER}.weight"
        state[a] = torch.nn.init.kaiming_uniform_(torch.empty(shapes[a]), a=math.sqrt(5),
                                                  generator=gen)
        state[b] = torch.zeros(shapes[b])
    return state


def is_adapter(name: str) -> bool:
    return ".lora_" in name


def plain_name(name: str) -> str:
    """The name a weight has in the model without LoRA layers (and in its checkpoint)."""
    return name.replace(".base_layer.", ".")


def merge(state: dict[str, torch.Tensor], adapters: Adapters
          ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(plain weights with every adapter merged in, the adapter's tensors) from the whole state
    dict of a model with LoRA layers."""
    adapter = {k: v for k, v in state.items() if is_adapter(k)}
    plain = {plain_name(k): v for k, v in state.items() if not is_adapter(k)}
    for layer, scaling in adapters.scaling.items():
        A, B = adapter[f"{layer}.lora_A.{ADAPTER}.weight"], adapter[f"{layer}.lora_B.{ADAPTER}.weight"]
        plain[f"{layer}.weight"] = plain[f"{layer}.weight"] + (B @ A) * scaling
    return plain, adapter
