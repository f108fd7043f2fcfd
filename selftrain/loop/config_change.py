"""What a `--resume DIR key=value` may change without rewriting the run's history.

The recorded config (config.yaml, compare.yaml) says how every recorded round was made. A
resume may extend `rounds` and change keys that shape nothing recorded: where the folder lives
and is staged, the Ray cluster it runs on, tracking, and how `compare` schedules its runs and
states its differences (the report is rewritten from the recorded files). Any other change
stops the resume (exit 2, `ConfigChangeError`) unless `--allow-config-change` asks for it; then
the manifest records, from the first round that runs with it, each changed key's old and new
value (`config_changes`), which `report` shows.
"""

from __future__ import annotations

from typing import Any

from selftrain.config import Config, ConfigError, to_dict

FREE = ("run_root", "experiment", "staging_dir", "ray.", "tracking.", "compare.max_concurrent",
        "compare.baseline", "compare.pairs", "compare.resamples", "compare.bootstrap_seed", "compare.confidence",
        "metrics.prefetch_embeddings")
"""Keys (or key prefixes) a resume may change: they shape no recorded file."""


class ConfigChangeError(ConfigError):
    """A resume would change settings the recorded rounds were made with."""


def flat(cfg: Config | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a config."""
    raw = to_dict(cfg) if isinstance(cfg, Config) else cfg
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value and key not in ("arms",):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def history_changes(recorded: Config, new: Config) -> dict[str, list[Any]]:
    """{key: [recorded, new]} of every changed key that shapes recorded files (a smaller
    `rounds` included: it would claim a run shorter than the one recorded)."""
    old, now = flat(recorded), flat(new)
    changed = {}
    for key in sorted(old.keys() | now.keys()):
        a, b = old.get(key), now.get(key)
        if a == b or key.startswith(FREE) or key in FREE:
            continue
        if key == "rounds" and b >= a:
            continue
        if key == "seeds" and a and b and set(a) <= set(b):
            continue  # compare: more seeds are new runs, the recorded ones stay as they were
        changed[key] = [a, b]
    return changed


def check_resume_config(recorded: Config, new: Config, where: str, allow: bool) -> None:
    """Stop a resume that would change recorded settings, naming them and their values."""
    changed = history_changes(recorded, new)
    if not changed or allow:
        return
    said = "; ".join(f"{key}={_show(b)} (recorded: {_show(a)})" for key, (a, b) in changed.items())
    raise ConfigChangeError(
        f"--resume {where}: the command line changes what the recorded rounds were made with: "
        f"{said}. A resume may only extend `rounds` and change {', '.join(_free_names())}. "
        f"Start a new run (another experiment, or --overwrite), or add --allow-config-change "
        f"to run the remaining rounds with it (the manifest then records from which round)")


def _free_names() -> list[str]:
    return [k + "*" if k.endswith(".") else k for k in FREE]


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def record_config_changes(folder, cfg: Config) -> None:
    """Before a resumed run rewrites config.yaml: the keys it changes (an allowed change) go to
    the manifest's `config_changes` with the first round whose unrecorded stages use them."""
    from selftrain.config import load_config

    path = folder.path / "config.yaml"
    if not path.is_file() or not folder.recorded_rounds():
        return
    changed = history_changes(load_config(path), cfg)
    if not changed:
        return
    rounds = folder.recorded_rounds()
    first = next((k for k in rounds if not folder.is_done(k, "metrics")), rounds[-1] + 1)
    entry = {"from_round": first, "stages_already_recorded": folder.stages(first),
             "changes": changed}
    folder.set_meta(config_changes=[*folder.manifest.get("config_changes", []), entry])
