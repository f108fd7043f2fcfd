"""Write the NQ-format fixture of configs/nq_search_cpu.yaml: questions over the embedded
multihop world, so the embedded multihop base model can answer them.

Run once from the repository root (the files are committed; tests/test_nq_search.py checks
they still match the world):

    python tests/data/nq_search/make_fixture.py

train.jsonl / test.jsonl: {"id", "question", "golden_answers"} rows (NQ / FlashRAG layout),
taken from the training pool and the test split of the multihop task below, with the "?"
dropped as NQ writes questions (searchqa adds it back, as Search-R1 does). corpus.jsonl: the
world's documents ({"id", "title", "text"}), the corpus the multihop policy searched in its
demonstrations. The multihop demonstrations are fresh questions after both splits, so no
fixture question was seen by the base model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from selftrain.tasks.multihop import MultihopTask

HERE = Path(__file__).resolve().parent
WORLD = {"seed": 0, "levels": [1, 2, 3], "train_per_level": 30, "test_per_level": 25, "topk": 1,
         "max_turns": 5}
"""configs/multihop_compare.yaml's task, so its base model is the CPU config's policy."""
PER_LEVEL = {"train": 10, "test": 8}


def nq_rows(task: MultihopTask, split: str) -> list[dict]:
    rows = []
    for level in task.levels:
        queries = [q for q in task.queries(split) if q.difficulty == level][: PER_LEVEL[split]]
        rows += [{"id": q.query_id, "question": q.data["question"].removesuffix("?"),
                  "golden_answers": q.data["golden_answers"]} for q in queries]
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        task = MultihopTask(**WORLD, cache_dir=tmp)
        shutil.copyfile(task.corpus_path(), HERE / "corpus.jsonl")
        for split in ("train", "test"):
            lines = [json.dumps(row) + "\n" for row in nq_rows(task, split)]
            (HERE / f"{split}.jsonl").write_text("".join(lines))
    print(f"wrote {HERE}/train.jsonl, test.jsonl, corpus.jsonl")


if __name__ == "__main__":
    main()
