"""What building the embedded base model costs, said before the build starts.

The embedded model is cached under a key of everything that shapes it (`tiny_model.cache_key`):
the task's description (its `task.args` with their defaults) and `model.tiny`. Changing any of
them, e.g. `task.args.train_per_level` for a smaller test run, means a new model: seed SFT of
`model.tiny.sft_steps` steps, minutes on a laptop CPU. The notice names the keys that differ
from the nearest model already built (shipped or cached) and estimates the time from that
model's recorded build (`selftrain_base.json`: its seconds, steps, batch size and widths).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selftrain.config import TinyModelConfig
from selftrain.models.shipped import SHIPPED


def built_models(task_name: str, cache_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(what it is, its selftrain_base.json) of every built model of the task: shipped, cached."""
    found = []
    for where, root in (("shipped", SHIPPED), ("cached", cache_dir)):
        for info in sorted(root.glob(f"{task_name}-*/selftrain_base.json")):
            try:
                found.append((f"the {where} model {info.parent.name}", json.loads(info.read_text())))
            except (OSError, ValueError):
                continue
    return found


def differences(info: dict[str, Any], task: dict[str, Any], cfg: TinyModelConfig) -> list[str]:
    """`task.args.<key> old → new` and `model.tiny.<key> old → new` between a built model's
    record and the settings asked for."""
    out = []
    for prefix, old, new in (("task.args", info.get("task", {}), task),
                             ("model.tiny", info.get("model", {}), asdict(cfg))):
        for key in sorted(set(old) | set(new)):
            if key != "name" and old.get(key) != new.get(key):
                out.append(f"{prefix}.{key} {old.get(key)!r} → {new.get(key)!r}")
    return out


def estimate_seconds(info: dict[str, Any], cfg: TinyModelConfig) -> float | None:
    """The recorded build's seconds, scaled by steps x batch size x width^2 x layers (the SFT
    compute per step grows about so); None when the record lacks a figure."""
    ref = info.get("model", {})
    try:
        scale = ((cfg.sft_steps / ref["sft_steps"]) * (cfg.sft_batch_size / ref["sft_batch_size"])
                 * (cfg.hidden_size / ref["hidden_size"]) ** 2
                 * (cfg.num_layers / ref["num_layers"]))
        return float(info["seconds"]) * scale
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def rebuild_notice(task: dict[str, Any], cfg: TinyModelConfig, cache_dir: Path,
                   path: Path) -> str:
    """One paragraph: that the model is built, why (the differing keys), about how long."""
    name = task.get("name", "?")
    known = built_models(name, cache_dir)
    line = (f"building the embedded base model for task {name}: no shipped or cached model was "
            f"built with these task.args and model.tiny settings")
    if known:
        where, info = min(known, key=lambda k: len(differences(k[1], task, cfg)))
        diff = differences(info, task, cfg)
        line += f"; {where} differs in {', '.join(diff[:6])}" + (" …" if len(diff) > 6 else "")
        seconds = estimate_seconds(info, cfg)
        if seconds is not None:
            line += (f". Seed SFT of {cfg.sft_steps} steps: roughly {_duration(seconds)} "
                     f"(that model's build took {info['seconds']:.0f} s for "
                     f"{info['model']['sft_steps']} steps)")
    else:
        line += f". Seed SFT of {cfg.sft_steps} steps: minutes on a CPU"
    return line + f"; it is cached in {path} for later runs."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
