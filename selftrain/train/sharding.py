"""How the training ranks share the policy (`train.strategy`), and moving whole state dicts in
and out of it whichever way it is shared.

- `ddp`: every rank holds the whole model, its gradients and AdamW state; DDP averages the
  gradients. A 7B policy in fp32 with AdamW needs ~112 GB per rank.
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) shards each decoder layer, then the
  rest of the model (embeddings, final norm, LM head), over the ranks: each holds 1/N of the
  weights, gradients and optimizer state, and gathers a layer's weights only while it computes
  (forward, then again for backward). With `train.bf16` on a GPU the gathered weights are bf16
  (`MixedPrecisionPolicy`), while the shards, the gradient reduction and the optimizer stay fp32.

Either way the model's state dict moves through torch.distributed.checkpoint's helpers, which
gather a sharded model's full weights onto rank 0 (for the checkpoint) and shard full weights
back into it (the start of a round), and do the same for a model that is not sharded.
"""

from __future__ import annotations

import torch

from selftrain.config import ConfigError
from selftrain.device import bf16_params_supported


def shard(model: torch.nn.Module, device: torch.device, bf16: bool) -> None:
    """FSDP2 in place: each decoder layer one unit, then the root. The shards move to `device`
    as they are made, so a model loaded on the CPU never sits whole on the GPU."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 and bf16_params_supported(device) else MixedPrecisionPolicy())
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (`train.activation_checkpointing`),
    with torch's non-reentrant checkpoint, which works with frozen weights (LoRA) and with FSDP's
    hooks (a recomputed layer is gathered again). transformers >= 5.20 renamed the switch."""
    kwargs = {"use_reentrant": False}
    model.config.use_cache = False  # a KV cache is of no use in training, and HF warns
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the classes transformers models name in `_no_split_modules`
    (e.g. LlamaDecoderLayer), as accelerate's FSDP auto-wrapping finds them."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(
            f"train.strategy fsdp: found no decoder layers in {type(model).__name__} (it names "
            f"none in `_no_split_modules`), so there is nothing to shard layer by layer; use "
            f"train.strategy: ddp for this model")
    return layers


def precision(strategy: str, bf16: bool, device: torch.device) -> tuple[str, torch.dtype | None]:
    """How a round computes (a label for its stats) and the autocast dtype, if any: bf16 weights
    under FSDP on a GPU that supports them, else bf16 autocast over fp32 weights (DDP, and the
    CPU, where FSDP keeps fp32 weights), or plain fp32."""
    if not bf16:
        return "fp32", None
    if strategy == "fsdp" and bf16_params_supported(device):
        return "bf16 weights (FSDP mixed precision, fp32 shards and reduction)", None
    return "bf16 autocast, fp32 weights", torch.bfloat16


def for_training(model: torch.nn.Module, strategy: str, world_size: int) -> torch.nn.Module:
    """The module a round's loop calls: DDP around the model when it is whole on more than one
    rank; an FSDP model is already sharded (once, for the run)."""
    if strategy == "ddp" and world_size > 1:
        return torch.nn.parallel.DistributedDataParallel(model)
    return model


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state dict on rank 0, on the CPU ({} on other ranks). Every rank must
    call it: under FSDP it gathers the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def load_full_state(model: torch.nn.Module, state: dict[str, torch.Tensor],
                    from_rank0: bool = False) -> None:
    """Copy whole tensors into the model (under FSDP: each rank keeps its shard of them); names
    absent from `state` keep their values. `from_rank0`: only rank 0 passes the tensors, which
    are broadcast; otherwise every rank passes the same ones. Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # a copy: the helper replaces the values of the dict it is given with the sharded tensors
    set_model_state_dict(model, dict(state), options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=from_rank0, strict=False))


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers into every rank's model, in place. FSDP shards parameters only; buffers
    (rotary frequencies, most of them outside the state dict) are whole on every rank, and a
    model built on the meta device has none worth keeping."""
    import torch.distributed as dist

    for _, buffer in model.named_buffers():
        dist.broadcast(buffer, src=0)


def reshard(model: torch.nn.Module) -> None:
    """Free the whole weights an FSDP forward left gathered. The root unit keeps its weights
    gathered after a forward until the backward reshards them; after a forward without one
    (under no_grad: DPO's reference pass) they would stay, and the next training forward
    would compute with them while the optimizer updates the shards."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
