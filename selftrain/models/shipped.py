"""Base models shipped in the repository, so that a fresh clone's first run does not spend
minutes seed-SFT'ing one (the demo's countdown model: ~3.4 MB, 600 SFT steps, 2-4 min on 2 cores).

A shipped folder is named exactly as the cache names a built one (`<task>-<cache key>`), so it
is used only for the configuration that built it. `weights.sha256` lists the sha256 of each file
that defines the model (`sha256sum` format); a folder whose files do not match it (a Git LFS
pointer, a hand edit) is ignored and the model is built as before. `scripts/build_base_model.py`
rebuilds a shipped folder, and a slow test checks a rebuild gives the same files.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

SHIPPED = Path(__file__).with_name("base_models")
HASHES = "weights.sha256"
MODEL_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json")
"""The files that make the model; `selftrain_base.json` (how it was built, with its build time)
is shipped but not hashed."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_hashes(folder: Path) -> dict[str, str]:
    """{file name: sha256} of the model files present in `folder`."""
    return {name: sha256_file(folder / name) for name in MODEL_FILES if (folder / name).is_file()}


def write_hashes(folder: Path) -> Path:
    path = folder / HASHES
    path.write_text("".join(f"{h}  {name}\n" for name, h in model_hashes(folder).items()))
    return path


def read_hashes(folder: Path) -> dict[str, str]:
    lines = (folder / HASHES).read_text().splitlines()
    return {name.strip(): h for h, name in (line.split(maxsplit=1) for line in lines if line)}


def intact(folder: Path) -> bool:
    """The folder holds every model file, each with the hash its `weights.sha256` lists."""
    if not (folder / HASHES).is_file():
        return False
    listed = read_hashes(folder)
    return set(listed) == set(MODEL_FILES) and model_hashes(folder) == listed


def copy_shipped(name: str, dest: Path) -> bool:
    """Copy the shipped model `name` to `dest` when there is an intact one; False otherwise."""
    source = SHIPPED / name
    if not intact(source):
        return False
    shutil.copytree(source, dest)
    return True
