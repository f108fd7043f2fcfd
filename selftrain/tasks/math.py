"""Math: word problems in GSM8K format or competition problems in MATH format, answers checked
with math-verify.

GSM8K rows hold `question` and `answer`, a worked solution ending in "#### 42" (with calculator
notes like "<<48/2=24>>", which are dropped). MATH rows hold `problem`, `solution` (the answer
is the last `\\boxed{...}`) and `level` ("Level 3"). Data comes from local json / jsonl /
parquet files or any `datasets.load_dataset` source, with configurable column names. There is
no solver: a query's reference solution is the dataset's own worked solution.

Checking: the final answer of a completion is the last of "#### x", "\\boxed{x}" or "The answer
is x" in it. Plain numbers (thousands separators, "$", trailing units and zeros dropped) are
compared exactly as fractions; anything else goes to math-verify (`parse` + `verify`) so
"\\frac{1}{2}", "1/2" and "0.5" agree. A string math-verify cannot read, or one that times out,
is simply not correct: checking never raises.

Difficulty: the `level_column` when the data has one (MATH). Otherwise every query starts at
level 1 and the task asks the loop for the base policy's solve rates (`needs_policy_difficulty`,
`assign_difficulty`): queries fall into `difficulty_buckets` quantile buckets, hardest = lowest
solve rate.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import warnings
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from selftrain.tasks.base import Demonstration
from selftrain.tasks.data import check_splits, load_rows, parse_level, subset_indices
from selftrain.tasks.registry import register_task
from selftrain.types import Query

PROMPT_TEMPLATE = "Question: {question}\nSolution:\n"
"""Prompt of a base (non-chat) model; the completion starts on a fresh line, so a `resume`
refinement (prompt + the good steps, one per line) reads the same as a first attempt."""

CHAT_PROMPT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
)
"""User message of an instruct model (`chat_template=True`): Qwen2.5-Math's instruction."""

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "answer_is", "plain")
STEP_SPLITS = ("lines", "sentences")
MAX_ANSWER_CHARS = 200
"""Longer extracted answers are compared as strings only: parsing them with sympy is slow and
they are almost never a real final answer (a runaway line after "The answer is")."""

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(r"\b(?:final\s+)?answer\s*(?:is|:)\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(\"'])")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_RATIO = re.compile(r"[-+]?\d+/\d+")
_NUMBER_WITH_UNIT = re.compile(r"([-+]?[\d,]*\.?\d+)\s*([A-Za-z][A-Za-z .]*)")
_NOT_UNITS = {"pi", "i", "e", "sqrt"}


# ---------------------------------------------------------------- answers


def _boxed(text: str) -> tuple[int, str] | None:
    """(start, content) of the last complete `\\boxed{...}` / `\\fbox{...}` (nested braces ok).

    A box cut off by max_new_tokens (no closing brace) does not count; an earlier complete one
    then does. `\\boxed 5` (no braces) reads up to the next space or `$`.
    """
    for m in reversed(list(_BOXED.finditer(text))):
        rest = text[m.end() :]
        if not rest.startswith("{"):
            token = re.match(r"[^\s$]+", rest)
            if token:
                return m.start(), token.group(0)
            continue
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                return m.start(), rest[1:i]
    return None


def _hashes(text: str) -> tuple[int, str] | None:
    found = [m for m in _HASHES.finditer(text) if m.group(1).strip()]
    return (found[-1].start(), found[-1].group(1)) if found else None


def _answer_is(text: str) -> tuple[int, str] | None:
    """(start, answer) of the last "The answer is x" / "Answer: x", x cut at its sentence end."""
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        answer = re.split(r"\.\s", m.group(1), maxsplit=1)[0]
        if answer.strip(" .$"):
            return m.start(), answer
    return None


_EXTRACTORS = {"gsm8k": _hashes, "boxed": _boxed, "answer_is": _answer_is}


def extract_final_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer written in `text`, normalized (`normalize_math_answer`), or None.

    "auto" takes whichever of "#### x", "\\boxed{x}", "The answer is x" comes last in the text
    (the model's final statement wins); a named format looks only for its own marker; "plain"
    means the text is the answer itself.
    """
    if answer_format == "plain":
        return normalize_math_answer(text) or None
    extractors = _EXTRACTORS.values() if answer_format == "auto" else [_EXTRACTORS[answer_format]]
    found = [hit for hit in (f(text) for f in extractors) if hit is not None]
    if not found:
        return None
    return normalize_math_answer(max(found, key=lambda hit: hit[0])[1]) or None


def normalize_math_answer(answer: str) -> str:
    """Canonical text of a final answer, so equal answers are equal strings (for `maj@n`).

    Drops surrounding `$` / `\\( \\)`, escaped dollars, LaTeX thin spaces and a final period;
    a plain number loses thousands separators, trailing zeros and a trailing unit word
    ("1,000.50 dollars" -> "1000.5"). Everything else is left for math-verify.
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("\\!", "").replace("\\,", "").replace("\\%", "%")
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.strip().strip("$").strip().rstrip(".").strip()
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m and m.group(2).strip(" .").lower() not in _NOT_UNITS and len(m.group(2).strip()) > 1:
        s = m.group(1)
    number = as_number(s)
    if number is not None and "/" not in s:
        d = Decimal(number.numerator) / Decimal(number.denominator)
        return "0" if d == 0 else format(d.normalize(), "f")
    return s


def as_number(s: str) -> Fraction | None:
    """The exact value of a plain number ("1,000", "-3.50", "12.", "3/4"), else None."""
    s = s.strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        if _RATIO.fullmatch(s) and int(s.rsplit("/", 1)[1]) != 0:
            return Fraction(s)
    except (ValueError, ZeroDivisionError, InvalidOperation):
        return None
    return None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@lru_cache(maxsize=1 << 14)
def _parse(text: str, timeout_s: int | None) -> tuple[Any, ...]:
    """math-verify's reading of an answer: as LaTeX first, then as a plain expression."""
    from math_verify import parse

    found = parse(f"${text}$", parsing_timeout=timeout_s)
    return tuple(found or parse(text, parsing_timeout=timeout_s))


def answers_match(gold: str | None, pred: str | None, timeout_s: int = 3) -> bool:
    """Whether `pred` states the same answer as `gold`; never raises.

    Plain numbers are compared exactly; anything else with math-verify (gold first: its
    `verify` is not symmetric). math-verify bounds each parse and comparison with a SIGALRM
    timer, which only works in the main thread; in any other thread (a threaded actor, a test
    runner's worker thread) it runs without a timeout rather than failing, and
    `MAX_ANSWER_CHARS` keeps pathological inputs out of sympy there.
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    if gold is None or pred is None:
        return False
    g, p = normalize_math_answer(gold), normalize_math_answer(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    gn, pn = as_number(g), as_number(p)
    if gn is not None and pn is not None:
        return gn == pn
    if max(len(g), len(p)) > MAX_ANSWER_CHARS:
        return False
    timeout = timeout_s if _in_main_thread() else None
    try:
        gold_parsed, pred_parsed = _parse(g, timeout), _parse(p, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))
    except (Exception, TimeoutException):  # noqa: BLE001 - a weird string is just wrong
        return False


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
    "\\boxed{}" is fine); default `PROMPT_TEMPLATE`, or `CHAT_PROMPT_TEMPLATE` as the user
    message when `chat_template` is true. Chat prompts need `tokenizer_path` (the policy's model
    path or hub id): the task is rebuilt from `task.args` in every process, so it carries its
    tokenizer by name rather than being handed one object.
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
        chat_template: bool = False,
        tokenizer_path: str | None = None,
        system_prompt: str | None = None,
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
        template = prompt_template or (CHAT_PROMPT_TEMPLATE if chat_template else PROMPT_TEMPLATE)
        if "{question}" not in template:
            raise ValueError(f"math prompt_template must contain {{question}}, got {template!r}")
        if chat_template and not tokenizer_path:
            raise ValueError("math chat_template: true needs task.args.tokenizer_path (the "
                             "policy's model folder or hub id, usually the same as model.path)")
        if difficulty_buckets < 1:
            raise ValueError(f"math difficulty_buckets must be >= 1, got {difficulty_buckets}")
        if verify_timeout_s < 1:
            raise ValueError(f"math verify_timeout_s must be a whole number of seconds >= 1 "
                             f"(math-verify uses signal.alarm), got {verify_timeout_s}")
        self.sources = {"train": train, "test": test}
        self.limits = {"train": max_train, "test": max_test}
        self.columns = {"question_column": question_column, "answer_column": answer_column,
                        "solution_column": solution_column, "level_column": level_column,
                        "id_column": id_column}
        self.answer_format = answer_format
        self.step_split = step_split
        self.seed = seed
        self.prompt_template = template
        self.chat_template = chat_template
        self.tokenizer_path = tokenizer_path
        self.system_prompt = system_prompt
        self.difficulty_buckets = difficulty_buckets
        self.stop: tuple[str, ...] = tuple(stop)
        self.verify_timeout_s = int(verify_timeout_s)
        self.cache_dir = cache_dir
        self._splits: dict[str, list[Query]] = {}
        self._assigned: dict[str, int] = {}
        self._tokenizer: Any = None
        self._fingerprints: dict[str, str] = {}

    @property
    def needs_policy_difficulty(self) -> bool:
        """True when the data has no level column: levels must come from the base policy's
        round-0 solve rates (`assign_difficulty`). Fixed by the config, whether or not levels
        have been assigned yet."""
        return self.columns["level_column"] is None

    # -- loading

    def _where(self, split: str) -> str:
        source = self.sources[split]
        label = source if isinstance(source, str) else f"{source.get('path')}[{source.get('split')}]"
        return f"math {split} data {label}"

    def _load(self, split: str) -> list[Query]:
        rows, _ = load_rows(self.sources[split], self.cache_dir, f"math task.args.{split}")
        where, cols = self._where(split), self.columns
        for arg, column in cols.items():
            if column is not None and column not in rows.column_names:
                raise ValueError(
                    f"{where}: no column {column!r} (task.args.{arg}); its columns are "
                    f"{rows.column_names}. Set task.args.{arg} to the right one.")
        indices = subset_indices(len(rows), self.limits[split], f"math:{self.seed}:{split}")
        solution_column = cols["solution_column"] or (
            None if self.answer_format == "plain" else cols["answer_column"])
        out, seen, unlevelled = [], {}, []
        for i in indices:
            row = rows[int(i)]
            at = f"{where}, row {i}"
            level = 1
            if cols["level_column"] is not None:
                level = parse_level(row[cols["level_column"]])
                if level is None:
                    unlevelled.append(i)
                    continue
            reference = str(row[cols["answer_column"]])
            answer = extract_final_answer(reference, self.answer_format)
            if answer is None:
                raise ValueError(
                    f"{at}: column {cols['answer_column']!r} has no final answer in format "
                    f"{self.answer_format!r} ({reference[-80:]!r}); set task.args.answer_format "
                    f"(one of {', '.join(ANSWER_FORMATS)}) or task.args.answer_column")
            qid = f"{split}-{row[cols['id_column']] if cols['id_column'] else f'{i:06d}'}"
            if qid in seen:
                raise ValueError(f"{at}: id {qid!r} repeats row {seen[qid]} (column "
                                 f"{cols['id_column']!r}); ids must be unique")
            seen[qid] = i
            question = str(row[cols["question_column"]]).strip()
            solution = None
            if solution_column is not None and row[solution_column] is not None:
                solution = _CALCULATOR.sub("", str(row[solution_column])).strip() + "\n"
            out.append(Query(query_id=qid, difficulty=level, prompt=self._prompt(question),
                             data={"question": question, "answer": answer,
                                   "solution": solution}))
        if unlevelled:
            warnings.warn(f"{where}: skipped {len(unlevelled)} row(s) whose column "
                          f"{cols['level_column']!r} names no level, e.g. row {unlevelled[0]}",
                          stacklevel=2)
        if not out:
            raise ValueError(f"{where}: no usable rows")
        return out

    def _prompt(self, question: str) -> str:
        text = self.prompt_template.replace("{question}", question)
        if not self.chat_template:
            return text
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        messages = [{"role": "user", "content": text}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self._tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=True)

    def check(self) -> None:
        """Load both splits now (before Ray starts): missing files, wrong columns, unreadable
        reference answers and a missing chat tokenizer fail here, naming file, column and row."""
        check_splits(self)

    # -- queries and difficulty

    def queries(self, split: str) -> list[Query]:
        """The split's queries, with levels from `assign_difficulty` once it has run."""
        if split not in self.sources:
            raise ValueError(f"math has splits 'train' and 'test', not {split!r}")
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
        known = {q.query_id for split in self.sources for q in self.queries(split)}
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
        for split, source in self.sources.items():
            if isinstance(source, str) and split not in self._fingerprints:
                path = Path(source).expanduser()
                self._fingerprints[split] = _sha256(path) if path.is_file() else "missing"
        return {"name": self.name, "sources": self.sources, "sha256": dict(self._fingerprints),
                "limits": self.limits, **self.columns, "answer_format": self.answer_format,
                "step_split": self.step_split, "seed": self.seed,
                "prompt_template": self.prompt_template, "chat_template": self.chat_template,
                "tokenizer_path": self.tokenizer_path, "system_prompt": self.system_prompt,
                "difficulty_buckets": self.difficulty_buckets}
