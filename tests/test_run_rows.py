"""The run folder's rows from their one home (selftrain.runfolder.schemas): builders, readers, first pass."""

from __future__ import annotations

import pyarrow.parquet as pq

from selftrain.runfolder.folder import write_parquet
from selftrain.runfolder.schemas import TRAIN_SCHEMA, first_pass, read_samples, train_row
from selftrain.types import Sample


def sample(q: str, j: int, origin: str = "sample", correct: bool = True) -> Sample:
    return Sample(sample_id=f"r0-{q}-s{j}", query_id=q, difficulty=1, prompt="p",
                  completion=f"c{j}", steps=[f"c{j}"], answer=None, correct=correct,
                  origin=origin, num_tokens=3)


def test_first_pass_is_each_querys_first_k_samples_in_drawing_order():
    # the generate stage's order: every query's first pass, then a budget top-up, then waves
    drawn = [sample("a", 0), sample("a", 1), sample("b", 0), sample("b", 1),
             sample("a", 2), sample("b", 2), sample("a", 3, origin="extra"),
             sample("a", 4, origin="refine")]
    got = [s.sample_id for s in first_pass(drawn, 2)]
    assert got == ["r0-a-s0", "r0-a-s1", "r0-b-s0", "r0-b-s1"]
    assert [s.sample_id for s in first_pass(drawn, 3)] == [
        "r0-a-s0", "r0-a-s1", "r0-b-s0", "r0-b-s1", "r0-a-s2", "r0-b-s2"]


def test_rows_written_read_back_as_the_same_records(tmp_path):
    samples = [sample("a", 0), sample("a", 1, correct=False)]
    write_parquet(tmp_path / "samples.parquet", [s.row() for s in samples])
    assert read_samples(tmp_path / "samples.parquet") == samples
    write_parquet(tmp_path / "train.parquet", [train_row(s, 2) for s in samples],
                  schema=TRAIN_SCHEMA)
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.schema.names == TRAIN_SCHEMA.names
    assert table.column("completion_tokens").to_pylist() == [2, 2]
