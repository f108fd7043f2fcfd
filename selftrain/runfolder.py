"""The run folder (the public contract of docs/design.md): atomic stage outputs and `manifest.json`.

A stage writes each file under a temporary name and renames it into place, then records itself
in the manifest with the row count and sha256 of every file it wrote. A resumed run skips what
the manifest says is done; `verify` re-hashes the files to find truncated or altered ones.

With a `Storage` (run_root is a URI) the folder is a staging copy: each record uploads the
stage's files and then the manifest, so the remote manifest names only files already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selftrain.storage import Storage


class RunLockedError(RuntimeError):
    """Another live process is writing to this run folder."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
                              + "\n").encode())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> int:
    table = pa.Table.from_pylist(rows, schema=schema) if rows or schema is None else schema.empty_table()
    return write_table(path, table)


def write_table(path: Path, table: pa.Table) -> int:
    """Write a parquet file atomically (temporary name, then rename); returns its rows."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table.num_rows


def read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


class RunFolder:
    """`runs/<experiment>/<arm>/seed<s>/` and its manifest."""

    def __init__(self, path: str | Path, storage: Storage | None = None) -> None:
        self.path = Path(path).resolve()  # Ray Train workers run in another working directory
        self.storage = storage
        self.manifest_path = self.path / "manifest.json"
        self.manifest: dict[str, Any] = {"rounds": {}}
        if self.manifest_path.is_file():
            self.manifest = json.loads(self.manifest_path.read_text())

    def round_dir(self, k: int) -> Path:
        d = self.path / f"round_{k}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- manifest ---------------------------------------------------------------------------
    def is_done(self, k: int, stage: str) -> bool:
        return stage in self.manifest["rounds"].get(str(k), {})

    def stage_info(self, k: int, stage: str) -> dict[str, Any]:
        return self.manifest["rounds"][str(k)][stage]

    def mark_done(self, k: int, stage: str, files: list[Path] | None = None,
                  **info: Any) -> None:
        """Record a finished stage with row counts and checksums of the files it wrote."""
        entry: dict[str, Any] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info,
                                 "files": {}}
        for f in files or []:
            rec: dict[str, Any] = {}
            if f.is_dir():  # checkpoints: sizes, since hashing many GB each round is slow
                rec["files"] = {str(p.relative_to(f)): p.stat().st_size
                                for p in sorted(f.rglob("*")) if p.is_file()}
            else:
                rec["sha256"] = sha256_of(f)
                rec["bytes"] = f.stat().st_size
                if f.suffix == ".parquet":
                    rec["rows"] = pq.ParquetFile(f).metadata.num_rows
            entry["files"][str(f.relative_to(self.path))] = rec
        self.manifest["rounds"].setdefault(str(k), {})[stage] = entry
        atomic_write_json(self.manifest_path, self.manifest)
        # Folders (checkpoints) are uploaded by the trainer rank that writes them.
        self.publish([f for f in files or [] if not f.is_dir()] + [self.manifest_path])

    def set_meta(self, **info: Any) -> None:
        self.manifest.update(info)
        atomic_write_json(self.manifest_path, self.manifest)
        self.publish([self.manifest_path])

    def publish(self, paths: list[Path]) -> None:
        """Upload staged files or folders, in order, when the run lives on object storage."""
        for p in paths if self.storage is not None else []:
            self.storage.upload(p)

    def pull(self) -> None:
        """Bring the staging copy level with the object store before a resume. The remote
        manifest is the record: when it differs from the local one, every file it names is
        downloaded (checkpoints included) and it replaces the local manifest."""
        remote = self.storage.read_bytes(self.manifest_path) if self.storage else None
        if remote is None or json.loads(remote) == self.manifest:
            return
        recorded = {rel for stages in json.loads(remote)["rounds"].values()
                    for entry in stages.values() for rel in entry.get("files", {})}
        for rel in ["config.yaml", *sorted(recorded)]:
            self.storage.download(self.path / rel)
        atomic_write_bytes(self.manifest_path, remote)
        self.manifest = json.loads(remote)

    # -- lock -------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Refuse to start when another live process holds the folder; take over a stale lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / ".lock"
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            other = _read_lock(lock)
            if other and other.get("host") == me["host"] and not _pid_alive(other.get("pid", -1)):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                return self.acquire_lock()
            raise RunLockedError(
                f"run folder {self.path} is in use by pid {other.get('pid')} on "
                f"{other.get('host')} (lock file {lock}); wait for it, or delete the lock if "
                f"that process is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)

    def release_lock(self) -> None:
        lock = self.path / ".lock"
        if (_read_lock(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def verify(path: str | Path) -> list[str]:
    """Problems found by re-reading every file the manifest records (empty when all is well)."""
    folder = RunFolder(path)
    if not folder.manifest_path.is_file():
        return [f"{folder.manifest_path} is missing"]
    # A later stage may rewrite a file an earlier one recorded (refine extends samples.parquet):
    # the newest record of each file is the one to check.
    latest: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for k, stages in sorted(folder.manifest["rounds"].items(), key=lambda kv: int(kv[0])):
        for stage, entry in stages.items():
            for rel, rec in entry.get("files", {}).items():
                latest[rel] = (k, stage, rec)
    problems = []
    for rel, (k, stage, rec) in latest.items():
        f = folder.path / rel
        where = f"round {k} stage {stage}: {rel}"
        if not f.exists():
            problems.append(f"{where} is missing")
        elif "files" in rec:
            for sub, size in rec["files"].items():
                p = f / sub
                if not p.is_file():
                    problems.append(f"{where}/{sub} is missing")
                elif p.stat().st_size != size:
                    problems.append(f"{where}/{sub} was truncated or altered "
                                    f"({p.stat().st_size} bytes, manifest says {size})")
        elif f.stat().st_size != rec["bytes"]:
            problems.append(f"{where} was truncated or altered "
                            f"({f.stat().st_size} bytes, manifest says {rec['bytes']})")
        elif sha256_of(f) != rec["sha256"]:
            problems.append(f"{where} was altered (checksum differs)")
    return problems


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
