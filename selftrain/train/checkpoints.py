"""A round's checkpoint: writing it once, and reading it into a model already in memory.

A round's checkpoint is a `save_pretrained` folder of plain weights, so every backend loads it
unchanged. Under `train.lora` the adapter that produced it is kept beside the weights, in
`adapter/` (peft's format): every reader here and in transformers and vLLM looks only at the
files at the top of the folder, and the run's manifest records the adapter's files with the
rest (their sizes, like every checkpoint file).

Workers that hold the policy (rollout backends, trainer ranks) only need its tensors: reading
the safetensors files and copying them into the live model skips building a second model (and
its memory) for every round.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

ADAPTER_DIR = "adapter"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors files at the top of the folder `path` ({} when none)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(f))
    return state


def tied_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are another parameter (an LM head tied to the embedding):
    `save_pretrained` leaves them out of the files."""
    return ({name for name, _ in model.named_parameters(remove_duplicate=False)}
            - {name for name, _ in model.named_parameters()})


def checkpoint_state(path: str | Path, names: set[str], tied: set[str],
                     dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights saved at `path`, for a model whose state has `names` (`tied` among them may be
    absent). Any other missing or unexpected tensor means the folder holds another
    architecture: transformers' loader then reads it, and says what is wrong."""
    state = read_weights(path)
    if not state or set(state) - names or names - set(state) - tied:
        from transformers import AutoModelForCausalLM

        state = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).state_dict()
    return state


def load_into(model: torch.nn.Module, path: str | Path) -> None:
    """Copy the weights saved at `path` into `model` in place; tied weights stay tied."""
    state = checkpoint_state(path, set(model.state_dict()), tied_names(model),
                             next(model.parameters()).dtype)
    model.load_state_dict(state, strict=False)


def write_checkpoint(out: Path, model: Any, tokenizer: Any, state: dict[str, torch.Tensor],
                     adapter: tuple[Any, dict[str, torch.Tensor]] | None = None) -> None:
    """Save `state` (plain weights) as a `save_pretrained` folder at `out`, and the adapter
    (peft model, its adapter tensors) in `out/adapter/`. Written under a temporary name and
    renamed, so a crash never leaves a half checkpoint that a resumed run could take for a
    finished one."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=state)
    tokenizer.save_pretrained(tmp)
    if adapter is not None:
        peft_model, tensors = adapter
        # peft names a tensor by its place in the peft model, which wraps ours as base_model.model
        peft_model.save_pretrained(tmp / ADAPTER_DIR, state_dict={
            f"base_model.model.{k}": v for k, v in tensors.items()})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
