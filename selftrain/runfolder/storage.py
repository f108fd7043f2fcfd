"""Where run folders live: a plain path (`LocalStorage`) or object storage (`ObjectStorage`,
`run_root: s3://bucket/prefix`, any URI `pyarrow.fs` reads). Both have one interface, so the
run folder, trainer and workers never ask which one they hold; `storage_for` builds it once per
run and the run folder carries it.

With object storage every process works on a local *staging* copy of the run folder and the object store holds the
record. The staging copy of `<run_root>/<rel>` is `<staging_dir>/<sha of run_root>/<rel>`, the
same path on every node, so a path that the driver hands a worker names the same file
everywhere; a worker on another node that lacks it downloads it first (`ensure_local`).

Uploads keep the run folder's rule: a stage's files first, `manifest.json` last, so the remote
manifest never names a file that is not there yet. S3 settings come from the URI's query
(`?endpoint_override=host:port&scheme=http&region=…`) or from the usual AWS environment
variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_uri(path: str) -> bool:
    """`s3://b/p`, `gs://…`, `file:///…` are URIs; `runs`, `/data/runs`, `C:\\runs` are paths."""
    return bool(_URI.match(str(path)))


def split_query(uri: str) -> tuple[str, str]:
    """`s3://b/p?x=1` -> (`s3://b/p`, `?x=1`): path parts go before the query, never after."""
    base, sep, query = uri.partition("?")
    return base.rstrip("/"), sep + query


class Storage(Protocol):
    """Where a run's record lives. Paths handed around are always local: the run folder itself
    (plain path) or its staging copy (object storage)."""

    uri: str
    local_root: Path
    """The local folder that stands for run_root (itself, or its staging copy)."""

    def uri_of(self, local: str | Path) -> str:
        """Where a local path lives, for messages."""
        ...

    def upload(self, local: str | Path) -> None:
        """Make the record hold this local file or folder."""
        ...

    def download(self, local: str | Path, *, keep_existing: bool = False) -> bool:
        """Put the record's copy of a local path in place; False when the record has none."""
        ...

    def ensure_local(self, path: str | Path) -> str:
        """`path`, fetched first when this node lacks it."""
        ...

    def read_bytes(self, local: str | Path) -> bytes | None:
        """The record's copy of a file, or None."""
        ...

    def exists(self, local: str | Path) -> bool:
        """Whether the record holds this path."""
        ...

    def delete(self, local: str | Path) -> None:
        """Remove the record's copy of a folder (the local copy is the caller's to remove)."""
        ...

    def check(self) -> None:
        """Raise ValueError when the record cannot be reached (before anything runs)."""
        ...


class LocalStorage:
    """run_root is a path every process sees (a local disk, NFS): the run folder is the record,
    so there is nothing to transfer."""

    def __init__(self, run_root: str | Path) -> None:
        self.uri = str(run_root)
        self.local_root = Path(run_root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({self.uri!r})"

    def uri_of(self, local: str | Path) -> str:
        return str(local)

    def upload(self, local: str | Path) -> None:
        pass

    def download(self, local: str | Path, *, keep_existing: bool = False) -> bool:
        return Path(local).exists()

    def ensure_local(self, path: str | Path) -> str:
        return str(path)

    def read_bytes(self, local: str | Path) -> bytes | None:
        path = Path(local)
        return path.read_bytes() if path.is_file() else None

    def exists(self, local: str | Path) -> bool:
        return Path(local).exists()

    def delete(self, local: str | Path) -> None:
        pass

    def check(self) -> None:
        """run_root can be made and written to (not a path through a file, not /proc)."""
        probe = self.local_root / f".selftrain-probe-{os.getpid()}"
        try:
            self.local_root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"key run_root: {self.uri} cannot be written to "
                             f"({err.strerror or type(err).__name__}); choose another "
                             f"run_root=") from None


class ObjectStorage:
    """A `run_root` URI and its local staging folder. Holds only strings, so it pickles cheaply
    into Ray actors and training ranks; the filesystem is built where it is used."""

    def __init__(self, run_root: str, staging_dir: str) -> None:
        self.uri = run_root
        self.base, self.query = split_query(run_root)
        digest = hashlib.sha256(self.base.encode()).hexdigest()[:12]
        self.local_root = Path(staging_dir).expanduser().resolve() / digest

    def __repr__(self) -> str:
        return f"ObjectStorage({self.uri!r} staged at {self.local_root})"

    # -- names ------------------------------------------------------------------------------
    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The filesystem and the path of run_root on it (`bucket/prefix` for S3)."""
        return pafs.FileSystem.from_uri(self.uri)

    def rel(self, local: str | Path) -> str:
        try:
            return Path(local).resolve().relative_to(self.local_root).as_posix()
        except ValueError:
            raise ValueError(f"{local} is not inside the staging folder {self.local_root} "
                             f"of {self.uri}") from None

    def remote_path(self, local: str | Path) -> tuple[pafs.FileSystem, str]:
        fs, root = self.filesystem()
        rel = self.rel(local)
        return fs, f"{root}/{rel}" if rel != "." else root

    def uri_of(self, local: str | Path) -> str:
        """The URI of a staged file, for messages (`s3://b/p/exp/arm/seed0?…`)."""
        rel = self.rel(local)
        return (f"{self.base}/{rel}" if rel != "." else self.base) + self.query

    # -- transfers --------------------------------------------------------------------------
    def upload(self, local: str | Path) -> None:
        """Copy a staged file, or a folder recursively, to the object store."""
        fs, dest = self.remote_path(local)
        pafs.copy_files(str(Path(local).resolve()), dest,
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    def download(self, local: str | Path, *, keep_existing: bool = False) -> bool:
        """Copy the remote file or folder of a staged path into place; False when absent.
        With `keep_existing`, a folder that another process on this node put in place while
        this one downloaded is kept (training ranks sharing a node may fetch the same one)."""
        fs, src = self.remote_path(local)
        kind = fs.get_file_info(src).type
        if kind == pafs.FileType.NotFound:
            return False
        local = Path(local).resolve()
        # Into a temporary name, then renamed: a half download is never taken for a copy.
        tmp = local.with_name(f".{local.name}.download-{os.getpid()}")
        _remove(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if kind == pafs.FileType.Directory:  # copy_files makes no local folders for S3 ones
            for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
                if info.type == pafs.FileType.Directory:
                    (tmp / info.path[len(src) + 1:]).mkdir(parents=True, exist_ok=True)
            tmp.mkdir(exist_ok=True)
        pafs.copy_files(src, str(tmp), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        if not keep_existing:
            _remove(local)
        try:
            tmp.replace(local)  # fails for a folder only when another process got there first
        except OSError:
            if not keep_existing:
                raise
            _remove(tmp)
        return True

    def ensure_local(self, path: str | Path) -> str:
        """`path` itself, downloaded first when this node lacks it (a checkpoint the trainer
        wrote on another node). Paths outside the staging folder (the base model) pass as is."""
        local = Path(path)
        if local.exists() or not local.resolve().is_relative_to(self.local_root):
            return str(path)
        if not self.download(local, keep_existing=True):
            raise FileNotFoundError(f"{path} is neither on this node nor at {self.uri_of(local)}")
        return str(path)

    def read_bytes(self, local: str | Path) -> bytes | None:
        """The remote copy of a staged file, or None when there is none."""
        return read_uri(self.uri_of(local))

    def exists(self, local: str | Path) -> bool:
        fs, path = self.remote_path(local)
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def delete(self, local: str | Path) -> None:
        fs, path = self.remote_path(local)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)

    def check(self) -> None:
        """Reach the bucket (or the folder above run_root) before anything runs."""
        try:
            fs, root = self.filesystem()
            if fs.type_name == "local":
                return
            bucket = root.split("/", 1)[0]
            found = fs.get_file_info(bucket).type
        except (OSError, ValueError) as err:
            raise ValueError(f"run_root {self.uri} cannot be reached: {err}") from err
        if found == pafs.FileType.NotFound:
            raise ValueError(f"run_root {self.uri}: bucket {bucket!r} does not exist; create it "
                             f"or fix run_root (endpoint and credentials come from the URI's "
                             f"query or the AWS_* environment variables)")


def read_uri(uri: str) -> bytes | None:
    """The object at a URI (query kept for the filesystem), or None when there is none."""
    fs, path = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def child(uri: str, name: str) -> str:
    """`s3://b/p?q` + `config.yaml` -> `s3://b/p/config.yaml?q`."""
    base, query = split_query(uri)
    return f"{base}/{name}{query}"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def storage_for(run_root: str, staging_dir: str) -> Storage:
    """`ObjectStorage` when run_root is a URI, else `LocalStorage`."""
    return ObjectStorage(run_root, staging_dir) if is_uri(run_root) else LocalStorage(run_root)
