"""Math: word problems in GSM8K format or competition problems in MATH format, answers checked
with math-verify.

GSM8K rows hold `question` and `answer`, a worked solution ending in "#### 42" (with calculator
notes like "<<48/2=24>>", which are dropped). MATH rows hold `problem`, `solution` (the answer
is the last `\\boxed{...}`) and `level` ("Level 3"). Data comes from local json / jsonl /
parquet files or any `datasets.load_dataset` source, with configurable column names. There is
no solver: a query's reference solution is the dataset's own worked solution.

Checking (`math_answers`): the final answer of a completion is the last of "#### x",
"\\boxed{x}" or "The answer is x" in it, compared with the reference exactly as a number or by
math-verify; checking never raises.

Difficulty: the `level_column` when the data has one (MATH). Otherwise every query starts at
level 1 and the task asks the loop for the base policy's solve rates (`needs_policy_difficulty`,
`assign_difficulty`): queries fall into `difficulty_buckets` quantile buckets, hardest = lowest
solve rate.
"""

from __future__ import annotations

import hashlib
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from selftrain.tasks.base import Demonstration
from selftrain.tasks.data import DataSplits, check_splits, load_queries, parse_level
from selftrain.tasks.math_answers import (
    ANSWER_FORMATS,
    answer_marker,
    answers_match,
    extract_final_answer,
)
from selftrain.tasks.registry import register_task
from selftrain.types import Query

PROMPT_TEMPLATE = "Question: {question}\nSolution:\n"
"""Prompt of a base (non-chat) model; the completion starts on a fresh line, so a `resume`
refinement (prompt + the good steps, one per line) reads the same as a first attempt."""

CHAT_PROMPT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
)
"""User message of an instruct model (`model.chat_template: true`): Qwen2.5-Math's
instruction."""

STEP_SPLITS = ("lines", "sentences")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(\"'])")


# ---------------------------------------------------------------- steps and levels


def split_steps(text: str, mode: str = "lines") -> list[str]:
    """Non-empty stripped lines; "sentences" also cuts each line after . ! ? and a space
    (so "3.5" and "e.g. x" stay whole)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if mode == "lines":
        return lines
    return [s.strip() for line in lines for s in _SENTENCE_END.split(line) if s.strip()]


def quantile_levels(solve_rates: dict[str, float], buckets: int) -> dict[str, int]:
    """Levels 1..`buckets` from solve rates: the lower the rate, the higher the level.

    level = buckets - floor(buckets * share of queries with a strictly lower rate), so equal
    rates share a level, the queries with the lowest rate are always at the top level, and with
    distinct rates every bucket holds about the same number of queries.
    """
    rates = sorted(solve_rates.values())
    n = len(rates)
    out = {}
    for qid, rate in solve_rates.items():
        below = bisect_left(rates, rate)
        out[qid] = buckets - min(buckets - 1, math.floor(buckets * below / n))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- the task


@register_task("math")
class MathTask:
    """Math problems from the user's data (GSM8K or MATH format, or any with these columns).

    train / test: a .json/.jsonl/.parquet path, or `datasets.load_dataset` arguments such as
    {"path": "openai/gsm8k", "name": "main", "split": "train"}.
    question_column / answer_column: the problem and the reference the final answer is read
    from, per `answer_format` ("auto": "####", "\\boxed{}" or "The answer is", whichever comes
    last; "gsm8k", "boxed", "answer_is": only that marker; "plain": the cell is the answer).
    solution_column: the worked solution (reference solutions, demonstrations); by default the
    answer column unless `answer_format` is "plain".
    level_column: difficulty per row ("Level 3", 3, "easy"); rows without a readable level are
    skipped with a warning. None: difficulty comes from the base policy (`assign_difficulty`).
    id_column: a unique id per row; None numbers rows in file order. Query ids are
    "<split>-<id>", so train and test ids never clash.
    max_train / max_test keep a seeded random subset (in file order).
    prompt_template: "{question}" is replaced by the question (no other braces are special, so
    "\\boxed{}" is fine); default `PROMPT_TEMPLATE` for a base model and, with
    `model.chat_template: true`, `CHAT_PROMPT_TEMPLATE` as the user message (`user_message`).
    verify_timeout_s: math-verify's time limit per parse / comparison (main thread only).
    """

    name = "math"

    def __init__(
        self,
        train: str | dict[str, Any],
        test: str | dict[str, Any],
        question_column: str = "question",
        answer_column: str = "answer",
        solution_column: str | None = None,
        level_column: str | None = None,
        id_column: str | None = None,
        answer_format: str = "auto",
        step_split: str = "lines",
        max_train: int | None = None,
        max_test: int | None = None,
        seed: int = 0,
        prompt_template: str | None = None,
        difficulty_buckets: int = 3,
        stop: Sequence[str] = (),
        verify_timeout_s: int = 3,
        cache_dir: str | None = None,
    ) -> None:
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"math answer_format must be one of {', '.join(ANSWER_FORMATS)}, "
                             f"got {answer_format!r}")
        if step_split not in STEP_SPLITS:
            raise ValueError(f"math step_split must be one of {', '.join(STEP_SPLITS)}, got "
                             f"{step_split!r}")
        if prompt_template is not None and "{question}" not in prompt_template:
            raise ValueError(f"math prompt_template must contain {{question}}, got "
                             f"{prompt_template!r}")
        if difficulty_buckets < 1:
            raise ValueError(f"math difficulty_buckets must be >= 1, got {difficulty_buckets}")
        if verify_timeout_s < 1:
            raise ValueError(f"math verify_timeout_s must be a whole number of seconds >= 1 "
                             f"(math-verify uses signal.alarm), got {verify_timeout_s}")
        self.data = DataSplits("math", {"train": train, "test": test},
                               {"train": max_train, "test": max_test}, seed, cache_dir)
        self.columns = {"question_column": question_column, "answer_column": answer_column,
                        "solution_column": solution_column, "level_column": level_column,
                        "id_column": id_column}
        self.answer_format = answer_format
        self.step_split = step_split
        self.prompt_template = prompt_template or PROMPT_TEMPLATE
        self.chat_prompt_template = prompt_template or CHAT_PROMPT_TEMPLATE
        self.difficulty_buckets = difficulty_buckets
        self.stop: tuple[str, ...] = tuple(stop)
        self.verify_timeout_s = int(verify_timeout_s)
        self._splits: dict[str, list[Query]] = {}
        self._assigned: dict[str, int] = {}
        self._fingerprints: dict[str, str] = {}

    @property
    def needs_policy_difficulty(self) -> bool:
        """True when the data has no level column: levels must come from the base policy's
        round-0 solve rates (`assign_difficulty`). Fixed by the config, whether or not levels
        have been assigned yet."""
        return self.columns["level_column"] is None

    # -- loading

    def _load(self, split: str) -> list[Query]:
        cols = self.columns
        return load_queries(self.data, split, cols, cols["id_column"], self._query,
                            f"whose column {cols['level_column']!r} names no level")

    def _query(self, row: dict[str, Any], at: str, query_id: Callable[[], str]) -> Query | None:
        """One row's query; None for a row whose level column names no level (skipped)."""
        cols = self.columns
        solution_column = cols["solution_column"] or (
            None if self.answer_format == "plain" else cols["answer_column"])
        level = 1
        if cols["level_column"] is not None:
            level = parse_level(row[cols["level_column"]])
            if level is None:
                return None
        reference = str(row[cols["answer_column"]])
        answer = extract_final_answer(reference, self.answer_format)
        if answer is None:
            raise ValueError(
                f"{at}: column {cols['answer_column']!r} has no final answer in format "
                f"{self.answer_format!r} ({reference[-80:]!r}); set task.args.answer_format "
                f"(one of {', '.join(ANSWER_FORMATS)}) or task.args.answer_column")
        qid = query_id()
        question = str(row[cols["question_column"]]).strip()
        solution = None
        if solution_column is not None and row[solution_column] is not None:
            solution = _CALCULATOR.sub("", str(row[solution_column])).strip() + "\n"
        return Query(query_id=qid, difficulty=level, prompt=self._prompt(question),
                     data={"question": question, "answer": answer, "solution": solution})

    def _prompt(self, question: str) -> str:
        return self.prompt_template.replace("{question}", question)

    def user_message(self, query: Query) -> str:
        """The instruct policy's user turn (`model.chat_template: true`)."""
        return self.chat_prompt_template.replace("{question}", query.data["question"])

    def check(self) -> None:
        """Load both splits now (before Ray starts): missing files, wrong columns and
        unreadable reference answers fail here, naming file, column and row."""
        check_splits(self)

    # -- queries and difficulty

    def queries(self, split: str) -> list[Query]:
        """The split's queries, with levels from `assign_difficulty` once it has run."""
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return [replace(q, difficulty=self._assigned.get(q.query_id, q.difficulty))
                for q in self._splits[split]]

    def assign_difficulty(self, solve_rates: dict[str, float]) -> dict[str, int]:
        """Levels from the base policy's solve rates (query_id -> share of correct samples).

        Quantile buckets over the queries given (`quantile_levels`): level 1 = the highest
        solve rates, `difficulty_buckets` = the lowest; ties share a level. Pass the pool's and
        the test split's rates in one call so a level means the same rates in both splits.
        `queries()` returns the new levels from now on; queries not given keep theirs.
        Returns {query_id: level} (save it to restore with `set_difficulty` on resume).
        """
        known = {q.query_id for split in self.data.sources for q in self.queries(split)}
        unknown = sorted(set(solve_rates) - known)
        if unknown:
            raise ValueError(f"math assign_difficulty: {len(unknown)} unknown query id(s), e.g. "
                             f"{unknown[:3]}")
        bad = {q: r for q, r in solve_rates.items() if not 0.0 <= float(r) <= 1.0}
        if bad:
            raise ValueError(f"math assign_difficulty: solve rates must lie in [0, 1], got "
                             f"{dict(list(bad.items())[:3])}")
        if not solve_rates:
            return {}
        levels = quantile_levels({q: float(r) for q, r in solve_rates.items()},
                                 self.difficulty_buckets)
        self._assigned.update(levels)
        return levels

    def set_difficulty(self, levels: dict[str, int]) -> None:
        """Restore levels saved from `assign_difficulty` (a resumed run reads difficulty.json)."""
        self._assigned.update({q: int(v) for q, v in levels.items()})

    # -- reading completions

    def split_steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_split)

    def extract_answer(self, completion: str) -> str | None:
        """The last "#### x", "\\boxed{x}" or "The answer is x" of the completion, normalized."""
        return extract_final_answer(completion, "auto")

    def format_of(self, completion: str) -> str | None:
        """How the final answer is stated: "boxed", "answer_is" or "gsm8k" (`answer_marker`)."""
        return answer_marker(completion)

    def is_correct(self, query: Query, completion: str) -> bool:
        return answers_match(query.data["answer"], self.extract_answer(completion),
                             self.verify_timeout_s)

    def solution_key(self, steps: list[str]) -> str:
        """Steps without whitespace, `$` or calculator notes, lower-cased, joined by "|"."""
        return "|".join(re.sub(r"[\s$]+", "", _CALCULATOR.sub("", s)).lower() for s in steps)

    def reference_solutions(self, query: Query) -> list[str]:
        """The dataset's worked solution (calculator notes dropped), when it has one."""
        solution = query.data.get("solution")
        return [solution] if solution else []

    def demonstrations(self, levels: Sequence[int], per_query: int = 1, seed: int = 0,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """(prompt, reference solution) of training-pool queries, for the embedded tiny model
        (a dataset has no spare rows beyond its splits).

        With a level column, queries of `levels`, at most `extra_per_level` per level in file
        order (None: all). Without one, levels are unknown until the base policy exists (and
        this builds the base policy), so every query counts as one level: `levels` is ignored
        and `extra_per_level` caps the total. Each query has one reference solution, so
        `per_query` and `seed` change nothing.
        """
        del per_query, seed
        wanted, taken = set(levels), Counter[int]()
        demos = []
        for q in self.queries("train"):
            level = 0 if self.needs_policy_difficulty else q.difficulty
            if not q.data["solution"] or (level not in wanted and not self.needs_policy_difficulty):
                continue
            if extra_per_level is None or taken[level] < extra_per_level:
                taken[level] += 1
                demos.append(Demonstration(q.prompt, q.data["solution"]))
        if not demos:
            raise ValueError(f"math: no training query with a worked solution"
                             f"{'' if self.needs_policy_difficulty else f' at levels {sorted(wanted)}'}"
                             f" to build the embedded base model from; set model.path to a "
                             f"HF model, or task.args.solution_column")
        return demos

    def describe(self) -> dict[str, Any]:
        """Everything that fixes the queries and prompts; local files by content hash too, so a
        cached tiny model is rebuilt when a data file changes under the same name."""
        for split, source in self.data.sources.items():
            if isinstance(source, str) and split not in self._fingerprints:
                path = Path(source).expanduser()
                self._fingerprints[split] = _sha256(path) if path.is_file() else "missing"
        return {"name": self.name, "sources": self.data.sources,
                "sha256": dict(self._fingerprints), "limits": self.data.limits, **self.columns,
                "answer_format": self.answer_format, "step_split": self.step_split,
                "seed": self.data.seed, "prompt_template": self.prompt_template,
                "difficulty_buckets": self.difficulty_buckets}
