"""The run folder (the public contract of docs/design.md): atomic stage outputs and `manifest.json`.

A stage writes each file under a temporary name and renames it into place, then records itself
in the manifest with the row count and sha256 of every file it wrote. A resumed run skips what
the manifest says is done; `verify` re-hashes the files to find truncated or altered ones. The
manifest itself is replaced atomically, and the version before the last update is kept as
`manifest.json.prev`, so a manifest damaged from outside can be recovered.

A run folder is locked before anything in it is read or deleted: a second run (`--overwrite`
included) pointed at a folder a live process holds stops without touching it.

The folder's `Storage` is the record: with object storage the folder is a staging copy and each
record uploads the stage's files and then the manifest, so the remote manifest names only files
already there; with a plain path uploads are no-ops.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selftrain.runfolder.storage import LocalStorage, Storage

LOCK = ".lock"
LOGS = "logs"


class RunLockedError(RuntimeError):
    """Another live process is writing to this run folder."""


class RunExistsError(FileExistsError):
    """The folder holds a run, and neither --resume nor --overwrite was given."""


class ManifestError(ValueError):
    """manifest.json cannot be read: the folder's record is damaged."""


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
    atomic_write_bytes(path, _json_bytes(obj))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode()


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


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at `path`, or ManifestError naming the file and how to recover it."""
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("rounds"), dict):
            raise ValueError("it has no 'rounds' mapping")
    except (ValueError, UnicodeDecodeError) as err:
        prev = path.with_name(path.name + ".prev")
        fix = (f"the version before its last update is {prev.name}: copy it over {path.name} "
               f"(the stage recorded last is then redone on --resume) and run `selftrain verify "
               f"{path.parent}`") if prev.is_file() else "no earlier version was kept"
        raise ManifestError(f"{path} is damaged ({err}); {fix}") from None
    return manifest


class RunFolder:
    """`runs/<experiment>/<arm>/seed<s>/` and its manifest. A run opens it with `open_folder`
    (locked); `RunFolder.read(path)` reads a finished one (verify, report)."""

    def __init__(self, path: str | Path, storage: Storage | None = None) -> None:
        self.path = Path(path).resolve()  # Ray workers run in another working directory
        self.storage = storage or LocalStorage(self.path)
        self.manifest_path = self.path / "manifest.json"
        self.manifest: dict[str, Any] = {"rounds": {}}
        self._written = b""

    @classmethod
    def read(cls, path: str | Path) -> RunFolder:
        folder = cls(path)
        folder.load()
        return folder

    def load(self) -> None:
        self.manifest = read_manifest(self.manifest_path)
        self._written = self.manifest_path.read_bytes()

    @property
    def log_path(self) -> Path:
        return self.path / LOGS / "selftrain.log"

    def round_dir(self, k: int) -> Path:
        d = self.path / f"round_{k}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- manifest ---------------------------------------------------------------------------
    def is_done(self, k: int, stage: str) -> bool:
        return stage in self.manifest["rounds"].get(str(k), {})

    def stage_info(self, k: int, stage: str) -> dict[str, Any]:
        return self.manifest["rounds"][str(k)][stage]

    def stages(self, k: int) -> list[str]:
        """The recorded stages of round k, in the order they ran."""
        return list(self.manifest["rounds"].get(str(k), {}))

    def recorded_rounds(self) -> list[int]:
        return sorted(int(k) for k, stages in self.manifest["rounds"].items() if stages)

    def mark_done(self, k: int, stage: str, files: list[Path] | None = None,
                  **info: Any) -> None:
        """Record a finished stage with row counts and checksums of the files it wrote."""
        entry: dict[str, Any] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info,
                                 "files": {}}
        for f in files or []:
            entry["files"][str(f.relative_to(self.path))] = _record_of(f)
        self.manifest["rounds"].setdefault(str(k), {})[stage] = entry
        # Folders (checkpoints) are uploaded by the trainer rank that writes them.
        self.publish([f for f in files or [] if not f.is_dir()])
        self._save()

    def drop_stages(self, k: int, first: str) -> list[str]:
        """Forget stage `first` of round k and every stage recorded after it in that round
        (their files are redone); returns the dropped names."""
        names = self.stages(k)
        dropped = names[names.index(first):]
        for name in dropped:
            del self.manifest["rounds"][str(k)][name]
        self._save()
        return dropped

    def prune(self, k: int, stage: str, path: Path) -> None:
        """Delete a folder a stage recorded (an old checkpoint), here and in the record, and
        mark it pruned so that `verify` and `--resume` do not look for it."""
        shutil.rmtree(path, ignore_errors=True)
        self.storage.delete(path)
        self.manifest["rounds"][str(k)][stage]["files"][str(path.relative_to(self.path))] = {
            "pruned": True}
        self._save()

    def set_meta(self, **info: Any) -> None:
        self.manifest.update(info)
        self._save()

    def _save(self) -> None:
        """Keep the manifest as it was before this update (`manifest.json.prev`), then replace
        it; both writes are atomic, so one of the two is always whole."""
        data = _json_bytes(self.manifest)
        if self._written:
            atomic_write_bytes(self.manifest_path.with_name("manifest.json.prev"), self._written)
        atomic_write_bytes(self.manifest_path, data)
        self._written = data
        self.publish([self.manifest_path])

    def publish(self, paths: list[Path]) -> None:
        """Upload staged files or folders, in order, to the run's record."""
        for p in paths:
            self.storage.upload(p)

    def pull(self) -> None:
        """Bring the staging copy level with the record before a resume. The remote manifest
        is the record: when it differs from the local one, every file it names is downloaded
        (checkpoints included) and it replaces the local manifest."""
        if isinstance(self.storage, LocalStorage):
            return
        remote = self.storage.read_bytes(self.manifest_path)
        local = self.manifest_path.read_bytes() if self.manifest_path.is_file() else None
        if remote is None or remote == local:
            return
        recorded = {rel for stages in json.loads(remote)["rounds"].values()
                    for entry in stages.values() for rel in entry.get("files", {})}
        for rel in ["config.yaml", *sorted(recorded)]:
            self.storage.download(self.path / rel)
        atomic_write_bytes(self.manifest_path, remote)

    def clear(self) -> None:
        """Delete the run (here and in the record) but the lock this process holds."""
        for entry in self.path.iterdir():
            if entry.name != LOCK:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        self.storage.delete(self.path)
        self.manifest, self._written = {"rounds": {}}, b""

    # -- checks -----------------------------------------------------------------------------
    def latest_records(self) -> dict[str, tuple[int, str, dict[str, Any]]]:
        """rel path -> (round, stage, record) of the newest record of each file: a later stage
        may rewrite a file an earlier one recorded (refine extends samples.parquet)."""
        latest: dict[str, tuple[int, str, dict[str, Any]]] = {}
        for k in self.recorded_rounds():
            for stage, entry in self.manifest["rounds"][str(k)].items():
                for rel, rec in entry.get("files", {}).items():
                    latest[rel] = (k, stage, rec)
        return latest

    def problem(self, rel: str, rec: dict[str, Any]) -> str | None:
        """What is wrong with a recorded file or folder now, or None when it is intact."""
        f = self.path / rel
        if rec.get("pruned"):
            return None
        if not f.exists():
            return f"{rel} is missing"
        if "files" in rec:
            for sub, size in rec["files"].items():
                p = f / sub
                if not p.is_file():
                    return f"{rel}/{sub} is missing"
                if p.stat().st_size != size:
                    return (f"{rel}/{sub} was truncated or altered ({p.stat().st_size} bytes, "
                            f"manifest says {size})")
            return None
        if f.stat().st_size != rec["bytes"]:
            return (f"{rel} was truncated or altered ({f.stat().st_size} bytes, manifest says "
                    f"{rec['bytes']})")
        if sha256_of(f) != rec["sha256"]:
            return f"{rel} was altered (checksum differs)"
        return None

    # -- lock -------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Refuse to start when another live process holds the folder; take over a stale lock."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            other = _read_lock(lock)
            if _stale(other):
                lock.unlink(missing_ok=True)
                return self.acquire_lock()
            raise RunLockedError(
                f"run folder {self.path} is in use by pid {other.get('pid')} on "
                f"{other.get('host')} (lock file {lock}); wait for it to finish, or delete the "
                f"lock file if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)

    def release_lock(self) -> None:
        lock = self.path / LOCK
        if (_read_lock(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def open_folder(path: Path, storage: Storage, *, resume: bool, overwrite: bool) -> RunFolder:
    """The run folder of a run, locked. The lock is taken before anything is read or deleted,
    so `--overwrite` of a folder a live run holds fails and leaves every file as it was. On
    object storage the remote copy decides whether a run exists, and a resume first brings the
    staging copy level with it."""
    folder = RunFolder(path, storage)
    folder.acquire_lock()
    try:
        where = storage.uri_of(folder.path)
        held = folder.manifest_path.exists() or storage.exists(folder.manifest_path)
        if held and not resume:
            if not overwrite:
                raise RunExistsError(
                    f"run folder {where} already holds a run: pass --resume to continue it, "
                    f"--overwrite to start over, or choose another experiment= / run_root=")
            folder.clear()
        if resume:
            folder.pull()
            if not folder.manifest_path.exists():
                raise FileNotFoundError(f"--resume: {where} has no manifest.json to resume from")
            folder.load()
    except BaseException:
        folder.release_lock()
        raise
    return folder


def verify(path: str | Path) -> list[str]:
    """Problems found by re-reading every file the manifest records (empty when all is well)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return [f"{manifest} is missing"]
    try:
        folder = RunFolder.read(path)
    except ManifestError as err:
        return [f"the manifest itself is damaged: {err}"]
    problems = []
    for rel, (k, stage, rec) in folder.latest_records().items():
        problem = folder.problem(rel, rec)
        if problem:
            problems.append(f"round {k} stage {stage}: {problem}")
    return problems


def _record_of(f: Path) -> dict[str, Any]:
    if f.is_dir():  # checkpoints: sizes, since hashing many GB each round is slow
        return {"files": {str(p.relative_to(f)): p.stat().st_size
                          for p in sorted(f.rglob("*")) if p.is_file()}}
    rec: dict[str, Any] = {"sha256": sha256_of(f), "bytes": f.stat().st_size}
    if f.suffix == ".parquet":
        rec["rows"] = pq.ParquetFile(f).metadata.num_rows
    return rec


def holder(path: Path) -> dict[str, Any] | None:
    """The live process holding the run folder at `path` ({"pid", "host"}), or None. A lock of
    a process gone from this host is not held; one from another host is taken at its word."""
    other = _read_lock(Path(path) / LOCK)
    return None if not other or _stale(other) else other


def _stale(lock: dict[str, Any]) -> bool:
    """A lock (as read) left by a process that is gone from this host."""
    return bool(lock) and lock.get("host") == socket.gethostname() and not _pid_alive(
        lock.get("pid", -1))


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
