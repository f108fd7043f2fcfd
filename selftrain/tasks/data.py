"""Reading a user's dataset for a task (searchqa, math): files or `datasets.load_dataset`
sources, seeded subsets, and level cells."""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from selftrain.types import Query

FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""File suffix -> the `datasets` builder that reads it."""
LEVEL_WORDS = {"easy": 1, "medium": 2, "hard": 3}
"""Level names as difficulty (HotpotQA's `level` column)."""


def load_rows(source: str | dict[str, Any], cache_dir: str | None = None,
              where: str = "data") -> tuple[Any, str]:
    """A `datasets.Dataset` and a label for messages, from a file path or load_dataset kwargs.

    `where` names the setting in error messages (e.g. "math task.args.train").
    """
    from datasets import load_dataset

    if isinstance(source, str):
        path = Path(source).expanduser()
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{where}: {path} is not a .json, .jsonl or .parquet file; for a "
                             f"hub dataset pass {{'path': <hub id>, 'split': 'train', ...}}")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: data file {path} does not exist")
        return load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache_dir), str(path)
    if not isinstance(source, dict) or "path" not in source or "split" not in source:
        raise ValueError(f"{where}: a data source is a .json/.jsonl/.parquet path or "
                         f"load_dataset arguments with 'path' and 'split', got {source!r}")
    label = f"{source['path']}[{source['split']}]"
    return load_dataset(**{"cache_dir": cache_dir, **source}), label


def check_splits(task: Any) -> None:
    """Load a dataset task's "train" and "test" splits now, before Ray starts: a missing file or
    column, or an unreadable row, is a `ConfigError` (the CLI exits 2) naming file and row."""
    from selftrain.config import ConfigError

    try:
        task.queries("train")
        task.queries("test")
    except ValueError as err:
        raise ConfigError(str(err)) from err


@dataclass(frozen=True)
class DataSplits:
    """A dataset task's "train" and "test" data: where each comes from (a file path or
    load_dataset arguments) and how many rows to keep (None: all)."""

    task: str
    sources: dict[str, str | dict[str, Any]]
    limits: dict[str, int | None]
    seed: int = 0
    cache_dir: str | None = None

    def rows(self, split: str) -> tuple[Any, str, Sequence[int]]:
        """The split's dataset, where it is for messages ("math test data <file>") and the
        indices of the rows to keep: a subset seeded by task, seed and split, in file order."""
        if split not in self.sources:
            raise ValueError(f"{self.task} has splits 'train' and 'test', not {split!r}")
        rows, label = load_rows(self.sources[split], self.cache_dir,
                                f"{self.task} task.args.{split}")
        keep = subset_indices(len(rows), self.limits[split], f"{self.task}:{self.seed}:{split}")
        return rows, f"{self.task} {split} data {label}", keep


def require_columns(rows: Any, columns: dict[str, str | None], where: str,
                    layout: tuple[str, Sequence[str]] | None = None) -> None:
    """ValueError unless every configured column (task.args key -> column name; None: not
    used) is in `rows`, naming the key to set; `layout` = (name, columns): the columns a fixed
    data layout needs (task.args.layout)."""
    if layout is not None:
        missing = [c for c in layout[1] if c not in rows.column_names]
        if missing:
            raise ValueError(f"{where}: no column(s) {missing} of the {layout[0]!r} layout "
                             f"(task.args.layout); its columns are {rows.column_names}.")
    for arg, column in columns.items():
        if column is not None and column not in rows.column_names:
            raise ValueError(f"{where}: no column {column!r} (task.args.{arg}); its columns are "
                             f"{rows.column_names}. Set task.args.{arg} to the right one.")


class QueryIds:
    """Query ids "<split>-<id>" of one split, from an id column or the row number, so train
    and test ids never clash; a repeated id is an error naming both rows."""

    def __init__(self, split: str, column: str | None) -> None:
        self.split = split
        self.column = column
        self.seen: dict[str, int] = {}

    def __call__(self, row: dict[str, Any], index: int, where: str) -> str:
        qid = f"{self.split}-{row[self.column] if self.column else f'{index:06d}'}"
        if qid in self.seen:
            raise ValueError(f"{where}: id {qid!r} repeats row {self.seen[qid]} (column "
                             f"{self.column!r}); ids must be unique")
        self.seen[qid] = index
        return qid


def load_queries(data: DataSplits, split: str, columns: dict[str, str | None],
                 id_column: str | None,
                 query_of: Callable[[dict[str, Any], str, Callable[[], str]], Query | None],
                 skipped: str = "",
                 layout: tuple[str, Sequence[str]] | None = None) -> list[Query]:
    """A dataset task's queries of `split`: `query_of(row, at, query_id)` for each kept row,
    `at` naming file and row for messages and `query_id()` giving the row's id (called when
    the row is taken, so a skipped row claims none); None skips the row, and the skipped rows
    are counted in one warning (`skipped` says why). ValueError when no row is usable.

    columns: task.args key -> column name, each required (None: not used). id_column: the ids'
    column when the data has it, else the row number. layout: (name, columns) of a fixed
    layout, all required.
    """
    rows, where, indices = data.rows(split)
    require_columns(rows, columns, where, layout)
    ids = QueryIds(split, id_column if id_column in rows.column_names else None)
    out, left_out = [], []
    for i in indices:
        row = rows[int(i)]
        at = f"{where}, row {i}"
        query = query_of(row, at, partial(ids, row, i, at))
        if query is None:
            left_out.append(i)
        else:
            out.append(query)
    if left_out:
        warnings.warn(f"{where}: skipped {len(left_out)} row(s) {skipped}, e.g. row "
                      f"{left_out[0]}", stacklevel=3)
    if not out:
        raise ValueError(f"{where}: no usable rows")
    return out


def subset_indices(num_rows: int, limit: int | None, salt: str) -> Sequence[int]:
    """Row indices to keep: all, or `limit` of them chosen with a seed, in file order."""
    if limit is None or limit >= num_rows:
        return range(num_rows)
    return sorted(random.Random(salt).sample(range(num_rows), limit))


def parse_level(value: Any) -> int | None:
    """A difficulty level from a dataset cell: 3, "3", "Level 3", "easy"/"medium"/"hard".

    None when the cell names no level (MATH has a few "Level ?" rows).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip().lower()
    if text in LEVEL_WORDS:
        return LEVEL_WORDS[text]
    m = re.search(r"-?\d+", text)
    return int(m.group(0)) if m else None
