"""`open_ended`: prompts without answers (WritingPrompts- or NoveltyBench-style), graded by a
scorer (selftrain/scorers/): a reward model, a served judge or a Python function.

Data: a .json/.jsonl/.parquet file, or `datasets.load_dataset` arguments, per split
(`task.args.train`, `task.args.test`) with a `prompt` column (`prompt_column`); an optional id
column and level column. A completion passes when its score reaches `pass_threshold`. The
scorer is built on first use, in the driver, which scores each query's samples of one
generate or evaluate call in one batch (`score_batch`).

    task:
      name: open_ended
      args:
        train: data/prompts_train.jsonl
        test: data/prompts_test.jsonl
        pass_threshold: 0.5
        scorer: {name: reward_model, args: {model: Skywork/Skywork-Reward-V2-Qwen3-0.6B}}
"""

from __future__ import annotations

import re
from typing import Any

from selftrain.scorers import Scorer, build_scorer
from selftrain.tasks.data import DataSplits, QueryIds, check_splits, parse_level, require_columns
from selftrain.tasks.registry import register_task
from selftrain.types import Query


@register_task("open_ended")
class OpenEndedTask:
    name = "open_ended"
    stop: tuple[str, ...] = ()

    def __init__(self, train: str | dict[str, Any], test: str | dict[str, Any],
                 scorer: dict[str, Any], pass_threshold: float = 0.5, train_size: int | None = None,
                 test_size: int | None = None, prompt_column: str = "prompt",
                 id_column: str | None = None, level_column: str | None = None, seed: int = 0,
                 cache_dir: str | None = None) -> None:
        if not 0.0 <= pass_threshold <= 1.0:
            raise ValueError(f"open_ended pass_threshold must be in [0, 1], got {pass_threshold}")
        self.data = DataSplits("open_ended", {"train": train, "test": test},
                               {"train": train_size, "test": test_size}, seed, cache_dir)
        self.scorer_spec = scorer
        self._scorer: Scorer | None = None
        self._threshold = pass_threshold
        self.columns = {"prompt_column": prompt_column, "id_column": id_column,
                        "level_column": level_column}
        self._queries: dict[str, list[Query]] = {}

    @property
    def pass_threshold(self) -> float:
        return self._threshold

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = build_scorer(self.scorer_spec)
        return self._scorer

    def check(self) -> None:
        """Read both splits before Ray starts (a missing file or column fails in seconds)."""
        check_splits(self)

    def queries(self, split: str) -> list[Query]:
        if split not in self._queries:
            rows, where, keep = self.data.rows(split)
            require_columns(rows, self.columns, where)
            ids, out = QueryIds(split, self.columns["id_column"]), []
            for i in keep:
                row = rows[i]
                level = (parse_level(row[self.columns["level_column"]])
                         if self.columns["level_column"] else 1)
                prompt = str(row[self.columns["prompt_column"]])
                out.append(Query(ids(row, i, where), level or 1, prompt + "\n", {}))
            self._queries[split] = out
        return list(self._queries[split])

    def split_steps(self, completion: str) -> list[str]:
        """Paragraphs (non-empty lines)."""
        return [line.strip() for line in completion.splitlines() if line.strip()]

    def extract_answer(self, completion: str) -> str | None:
        return completion.strip() or None

    def score(self, query: Query, completion: str) -> float | None:
        return self.score_batch(query, [completion])[0]

    def score_batch(self, query: Query, completions: list[str]) -> list[float | None]:
        """The scorer's values for one query's samples, in one call (unknown: None). The scorer
        sees the task's prompt, not its rendering in a policy's chat template."""
        prompt = (query.user_message or query.prompt).rstrip("\n")
        return [s.value for s in self.scorer.score([prompt] * len(completions), completions)]

    def is_correct(self, query: Query, completion: str) -> bool:
        value = self.score(query, completion)
        return value is not None and value >= self._threshold

    def solution_key(self, steps: list[str]) -> str:
        """Same text up to case and whitespace."""
        return re.sub(r"\s+", " ", " ".join(steps)).strip().lower()

    def reference_solutions(self, query: Query) -> list[str]:
        return []
