"""Read wandb's offline run files (`run-<id>.wandb`) back, to check what a run logged.

The file is a LevelDB-style log (a 7-byte header `:W&B` + magic + version, then 32 KiB blocks
of records, each `crc32, length, type` + payload, long records split FIRST/MIDDLE/LAST) whose
payloads are wandb's `Record` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    """Every Record in an offline run file, in the order it was written."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, _, _ = HEADER.unpack_from(data)
    assert ident == b":W&B", f"{path} is not a wandb run file"
    pos, pieces, out = HEADER.size, b"", []
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:
            pos += left
            continue
        _, length, kind = RECORD.unpack_from(data, pos)
        if kind == 0:  # zero padding up to the block end
            pos += left
            continue
        payload = data[pos + RECORD.size : pos + RECORD.size + length]
        pos += RECORD.size + length
        pieces = payload if kind in (FULL, FIRST) else pieces + payload
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pieces)
            out.append(rec)
    return out


def history(path: Path) -> list[dict]:
    """The history rows of a run file, each as {key: value}."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows


def exit_code(path: Path) -> int | None:
    """The exit code the run finished with, or None when it never finished."""
    codes = [rec.exit.exit_code for rec in records(path)
             if rec.WhichOneof("record_type") == "exit"]
    return codes[-1] if codes else None


def run_files(run_dir: Path) -> list[Path]:
    """The offline run files of a run folder that a `wandb sync` of `wandb/offline-run-*`
    would upload (superseded ones excluded)."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
