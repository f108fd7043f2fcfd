"""The demo's base model ships in the repository: what a fresh clone's first run uses, and
that the shipped files are what the build command makes (the slow test rebuilds it)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from selftrain.config import load_config
from selftrain.models.shipped import SHIPPED, intact, model_hashes, read_hashes
from selftrain.models.source import resolve_model

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "countdown_compare.yaml"
sys.path.insert(0, str(REPO / "scripts"))
from build_base_model import rebuild, shipped_name  # noqa: E402


def test_the_demo_config_names_an_intact_shipped_model():
    name = shipped_name(DEMO)[0]
    assert intact(SHIPPED / name), f"rebuild it: python scripts/build_base_model.py {DEMO}"
    assert (SHIPPED / name / "model.safetensors").stat().st_size < 8 * 2**20


def test_an_empty_cache_gets_the_shipped_model_not_a_build(tmp_path):
    cfg = load_config(DEMO, [f"model.cache_dir={tmp_path}"])
    from selftrain.tasks import make_task

    path = Path(resolve_model(cfg, make_task(cfg.task.name, **cfg.task.args)))
    shipped = SHIPPED / shipped_name(DEMO)[0]
    assert path.parent == tmp_path and path.name == shipped.name
    assert model_hashes(path) == read_hashes(shipped)
    # a build would record its own build time; the copy carries the shipped record
    assert json.loads((path / "selftrain_base.json").read_text()) == \
        json.loads((shipped / "selftrain_base.json").read_text())


def test_a_changed_byte_makes_the_shipped_folder_unusable(tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(SHIPPED / shipped_name(DEMO)[0], copy)
    assert intact(copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert not intact(copy)


def test_a_rebuild_gives_the_shipped_files(tmp_path):
    """Minutes on 2 cores: the build command's output is byte for byte the shipped model."""
    out = rebuild(DEMO, tmp_path)
    assert read_hashes(out) == read_hashes(SHIPPED / out.name)
