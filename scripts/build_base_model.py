"""Rebuild a shipped base model from its config, and list or check its files' hashes.

    .venv/bin/python scripts/build_base_model.py [configs/countdown_compare.yaml] [--out DIR]

Builds the config's embedded base model (the same code and settings `selftrain run` would use
on an empty cache: single-threaded seed SFT, deterministic) into
`selftrain/models/base_models/<task>-<cache key>/` (or under DIR), writes `weights.sha256`, and says
whether the hashes equal those already shipped. Minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shipped_name(config: Path) -> tuple[str, object, object]:
    """(folder name, embedded model, tiny-model settings) of the config's base model."""
    from selftrain.config import load_config
    from selftrain.models.tiny_model import cache_key
    from selftrain.tasks import abilities, make_task

    cfg = load_config(config, [])
    embedded = abilities(make_task(cfg.task.name, **cfg.task.args)).embedded_model
    if embedded is None:
        raise SystemExit(f"task {cfg.task.name!r} has no embedded base model")
    return f"{embedded.name}-{cache_key(cfg.model.tiny, embedded.describe())}", embedded, \
        cfg.model.tiny


def rebuild(config: Path, out_root: Path) -> Path:
    """Build the config's base model into out_root/<name>, with its weights.sha256."""
    from selftrain.models.shipped import write_hashes
    from selftrain.models.tiny_model import build_base_model

    name, embedded, tiny = shipped_name(config)
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    build_base_model(embedded, tiny, out)
    write_hashes(out)
    return out


def main() -> int:
    from selftrain.models.shipped import SHIPPED, read_hashes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(REPO / "configs" / "countdown_compare.yaml"))
    ap.add_argument("--out", default=None, help="build here instead of selftrain/models/base_models")
    args = ap.parse_args()
    name = shipped_name(Path(args.config))[0]
    before = read_hashes(SHIPPED / name) if (SHIPPED / name / "weights.sha256").is_file() else None
    out = rebuild(Path(args.config), Path(args.out) if args.out else SHIPPED)
    now = read_hashes(out)
    print((out / "weights.sha256").read_text(), end="")
    if before is not None:
        print("equal to the shipped hashes" if now == before else "DIFFERENT from the shipped hashes")
        return 0 if now == before else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
