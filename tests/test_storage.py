"""A run folder on object storage: `run_root=s3://…` against a real S3 server (moto, on
loopback). The bucket is read back with pyarrow.fs, the way another node would see it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from conftest import REPO, small_config

from selftrain.loop.driver import run_arm
from selftrain.runfolder.budget import arm_dir
from selftrain.runfolder.folder import RunFolder, verify
from selftrain.runfolder.storage import ObjectStorage, is_uri, split_query

moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port; yields a function bucket -> run_root URI.
    Credentials travel in the URI, so Ray workers started before this fixture need no env."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"

    def bucket(name: str, create: bool = True) -> str:
        if create:
            pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                              endpoint_override=f"{host}:{port}", scheme="http",
                              allow_bucket_creation=True).create_dir(name)
        return f"s3://testing:testing@{name}/runs{query}"

    yield bucket
    server.stop()


def remote_files(uri: str) -> dict[str, bytes]:
    """Every object under a URI, keyed by its path below it."""
    fs, root = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(root) + 1:]] = f.read()
    return out


# -- helpers ---------------------------------------------------------------------------------
def test_uris_and_paths_are_told_apart():
    assert is_uri("s3://bucket/runs") and is_uri("gs://b/p") and is_uri("file:///tmp/runs")
    assert not is_uri("runs") and not is_uri("/data/runs") and not is_uri("C:\\runs")
    assert split_query("s3://b/p/?endpoint_override=h:1") == ("s3://b/p", "?endpoint_override=h:1")


def test_staged_paths_map_to_uris_and_round_trip(s3, tmp_path):
    storage = ObjectStorage(s3("unit"), str(tmp_path / "staging"))
    ckpt = storage.local_root / "exp" / "round_1" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "model.bin").write_bytes(b"weights")
    (ckpt / "sub").mkdir()
    (ckpt / "sub" / "tok.json").write_bytes(b"{}")
    assert storage.uri_of(ckpt).startswith("s3://testing:testing@unit/runs/exp/round_1/checkpoint?")
    storage.upload(ckpt)
    assert remote_files(storage.uri) == {"exp/round_1/checkpoint/model.bin": b"weights",
                                         "exp/round_1/checkpoint/sub/tok.json": b"{}"}

    # another node: the path it was handed is missing, so it is fetched
    shutil.rmtree(storage.local_root)
    assert storage.ensure_local(str(ckpt)) == str(ckpt)
    assert (ckpt / "model.bin").read_bytes() == b"weights"
    assert (ckpt / "sub" / "tok.json").read_bytes() == b"{}"
    # two ranks on one node: the copy the other put in place is kept, not swapped under it
    (ckpt / "model.bin").write_bytes(b"in use")
    assert storage.download(ckpt, keep_existing=True)
    assert (ckpt / "model.bin").read_bytes() == b"in use"
    assert not list(ckpt.parent.glob(".checkpoint.download-*"))
    assert storage.read_bytes(storage.local_root / "nothing.json") is None
    with pytest.raises(FileNotFoundError, match="unit/runs/exp/missing"):
        storage.ensure_local(storage.local_root / "exp" / "missing")
    assert storage.ensure_local("/elsewhere/base-model") == "/elsewhere/base-model"


def test_a_stage_uploads_its_files_before_the_manifest(tmp_path):
    uploaded = []

    class Recorder:  # a Storage stand-in that notes the order of uploads
        def upload(self, path):
            uploaded.append(Path(path).name)

    folder = RunFolder(tmp_path / "run", Recorder())
    rd = folder.round_dir(0)
    (rd / "a.json").write_text("{}")
    (rd / "checkpoint").mkdir()
    folder.mark_done(0, "generate", [rd / "a.json", rd / "checkpoint"])
    folder.set_meta(arm="rs")
    assert uploaded == ["a.json", "manifest.json", "manifest.json"]


def test_a_missing_bucket_is_reported_before_ray_starts(s3, tmp_path, capsys):
    from selftrain.cli import main

    root = s3("no-such-bucket", create=False)
    code = main(["run", str(REPO / "configs" / "countdown_rs.yaml"), f"run_root={root}",
                 f"staging_dir={tmp_path}"])
    assert code == 2
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing staged, no Ray temp dir


# -- end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_run(s3, tmp_path_factory, ray_cluster, model_cache):
    tmp = tmp_path_factory.mktemp("s3run")
    root = s3("runs")
    cfg = small_config(tmp, model_cache, f"run_root={root}", f"staging_dir={tmp / 'staging'}",
                       "tracking.enabled=false")
    history = run_arm(cfg, "rs")
    base, query = split_query(root)
    return cfg, history, f"{base}/{cfg.experiment}/rs/seed0{query}"


def test_the_bucket_holds_the_run_folder_with_matching_checksums(s3_run):
    cfg, history, uri = s3_run
    assert sorted(history) == [0, 1]
    files = remote_files(uri)
    manifest = json.loads(files["manifest.json"])
    assert "config.yaml" in files
    for k in (0, 1):
        for name in ("samples.parquet", "train.parquet", "eval.parquet", "metrics.json"):
            assert f"round_{k}/{name}" in files
    assert "round_1/checkpoint/config.json" in files
    for stages in manifest["rounds"].values():
        for entry in stages.values():
            for rel, rec in entry["files"].items():
                if "sha256" in rec:
                    assert hashlib.sha256(files[rel]).hexdigest() == rec["sha256"], rel
                else:  # a checkpoint: sizes per file
                    for sub, size in rec["files"].items():
                        assert len(files[f"{rel}/{sub}"]) == size, f"{rel}/{sub}"
    assert json.loads(files["round_1/metrics.json"]) == pytest.approx(history[1])


def test_a_resume_without_the_staging_copy_continues_from_the_bucket(s3_run):
    """As on a fresh machine: no staging copy, `selftrain run --resume URI rounds=2`."""
    from selftrain.cli import main

    cfg, history, uri = s3_run
    before = json.loads(remote_files(uri)["manifest.json"])
    shutil.rmtree(arm_dir(cfg, "rs"))
    assert main(["run", "--resume", uri, "rounds=2"]) == 0
    files = remote_files(uri)
    after = json.loads(files["manifest.json"])
    for k in ("0", "1"):  # finished stages were read back, not run again
        assert after["rounds"][k] == before["rounds"][k]
    assert json.loads(files["round_1/metrics.json"]) == pytest.approx(history[1])
    assert "round_2/checkpoint/config.json" in files and "round_2/metrics.json" in files
    assert verify(arm_dir(cfg, "rs")) == []
