"""Reading a saved policy into a model that is already in memory.

A round's checkpoint is a `save_pretrained` folder. Workers that hold the policy (rollout
backends, trainer ranks) only need its tensors: reading the safetensors files and copying them
into the live model skips building a second model (and its memory) for every round.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_into(model: torch.nn.Module, path: str | Path) -> None:
    """Copy the weights saved at `path` into `model` in place. Tied weights (an LM head that is
    the embedding) are absent from the file and stay tied; any other missing or unexpected
    tensor means the folder holds another architecture: it falls back to transformers'
    loader, which says what is wrong."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - {
        name for name, p in model.named_parameters()}
    own = set(model.state_dict())
    if not files or set(state) - own or own - set(state) - tied:
        from transformers import AutoModelForCausalLM

        state = AutoModelForCausalLM.from_pretrained(path, dtype=next(model.parameters()).dtype
                                                     ).state_dict()
    model.load_state_dict(state, strict=False)
