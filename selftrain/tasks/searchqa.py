"""Searchqa: open-domain QA (NQ / HotpotQA format) answered by a search agent over a corpus.

Questions come from local json / jsonl / parquet files or any `datasets.load_dataset` source
(a hub id with a split), with configurable column names; the FlashRAG / Search-R1 layout
(`question`, `golden_answers`, `id`) is the default. What matches Search-R1 by default: its
prompt (`SEARCH_R1_TEMPLATE`), its question preprocessing (a "?" appended), its observation
format and corrective message (agent.py), and its scoring (the last <answer>, SQuAD-normalised,
exact match or, with `match: subem`, substring match against any gold answer). The environment
is the user's retriever: a Search-R1 retrieval server (or `selftrain serve-retriever`) over
HTTP, or BM25 over a JSONL corpus. The policy is model.path (an instruct model with
model.chat_template, as Search-R1 trains them), or, for CPU smoke runs, the embedded base model
of `base_model_task`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selftrain import agent
from selftrain.agent import AgentEnv
from selftrain.metrics.search import search_figures
from selftrain.retrieval import make_retriever
from selftrain.tasks.base import Demonstration, EmbeddedModel
from selftrain.tasks.data import DataSplits, QueryIds, check_splits, parse_level, require_columns
from selftrain.tasks.registry import register_task
from selftrain.types import Query

SEARCH_R1_TEMPLATE = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some knowledge, "
    "you can call a search engine by <search> query </search> and it will return the top "
    "searched results between <information> and </information>. You can search as many times "
    "as your want. If you find no further external knowledge needed, you can directly provide "
    "the answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)
"""Search-R1's `make_prefix` (template "base"), verbatim."""


def _answers(value: Any, where: str) -> list[str]:
    """Gold answers as a list of strings (a column may hold one string or a list / array)."""
    if isinstance(value, str):
        golds = [value]
    elif value is not None and hasattr(value, "__iter__"):
        golds = [str(v) for v in value]
    else:
        golds = []
    if not golds:
        raise ValueError(f"{where}: no gold answer ({value!r})")
    return golds


def prepare_question(text: str, question_mark: bool = True) -> str:
    """Search-R1's question preprocessing (`scripts/data_process/nq_search.py`): strip the
    question and, with `question_mark`, append "?" when it does not end with one."""
    question = text.strip()
    if question_mark and question and not question.endswith("?"):
        question += "?"
    return question


def _difficulty(value: Any, where: str) -> int:
    level = parse_level(value)
    if level is None:
        raise ValueError(f"{where}: difficulty {value!r} is not a level (an integer, \"Level 3\" "
                         f"or easy/medium/hard)")
    return level


@register_task("searchqa")
class SearchQATask:
    """QA over a user's data and retriever.

    train / test: a .json/.jsonl/.parquet path, or load_dataset arguments such as
    {"path": "RUC-NLPIR/FlashRAG_datasets", "name": "nq", "split": "train"}.
    retriever: a `make_retriever` spec ({"kind": "http", "url": ...} or {"kind": "bm25",
    "corpus": ...}); `corpus` alone is shorthand for BM25 over that JSONL file.
    Difficulty is `difficulty_column` when the data has it, else 1. `max_train` / `max_test`
    keep a seeded random subset (in file order).
    question_mark: append "?" to a question without one, as Search-R1's data preparation does
    (false keeps questions as written). match: "em" (Search-R1's `em_check`) or "subem"
    (`subem_check`: a gold answer inside the answer) decides `correct`; test figures report both.
    base_model_task: {name, args} of a task with an embedded base model (multihop) whose model
    is the policy when model.path is unset: only for CPU runs on data over that task's world
    (configs/nq_search_cpu.yaml).
    """

    name = "searchqa"
    stop: tuple[str, ...] = agent.STOP

    def __init__(
        self,
        train: str | dict[str, Any],
        test: str | dict[str, Any],
        retriever: dict[str, Any] | None = None,
        corpus: str | None = None,
        question_column: str = "question",
        answers_column: str = "golden_answers",
        difficulty_column: str = "difficulty",
        id_column: str = "id",
        max_train: int | None = None,
        max_test: int | None = None,
        seed: int = 0,
        topk: int = 3,
        max_turns: int = 4,
        prompt_template: str = SEARCH_R1_TEMPLATE,
        question_mark: bool = True,
        match: agent.Match = "em",
        base_model_task: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if "{question}" not in prompt_template:
            raise ValueError("searchqa prompt_template must contain {question}")
        if match not in agent.MATCHES:
            raise ValueError(f"searchqa match must be one of {', '.join(agent.MATCHES)}, got "
                             f"{match!r}")
        if base_model_task is not None and set(base_model_task) - {"name", "args"}:
            raise ValueError(f"searchqa base_model_task is {{name: <task>, args: {{...}}}}, got "
                             f"{base_model_task!r}")
        self.data = DataSplits("searchqa", {"train": train, "test": test},
                               {"train": max_train, "test": max_test}, seed, cache_dir)
        self.retriever_spec = retriever or ({"kind": "bm25", "corpus": corpus} if corpus else None)
        self.columns = {"question_column": question_column, "answers_column": answers_column,
                        "difficulty_column": difficulty_column, "id_column": id_column}
        self.topk, self.max_turns = topk, max_turns  # of an episode
        self.prompt_template = prompt_template
        self.question_mark = question_mark
        self.match = match
        self.base_model_task = base_model_task
        self._splits: dict[str, list[Query]] = {}

    def env(self) -> AgentEnv:
        if self.retriever_spec is None:
            raise ValueError("searchqa needs a retriever: set task.args.retriever (e.g. "
                             "{kind: http, url: 'http://127.0.0.1:8000/retrieve'}) or "
                             "task.args.corpus (a JSONL corpus for BM25)")
        return AgentEnv(retriever=make_retriever(self.retriever_spec), max_turns=self.max_turns,
                        topk=self.topk)

    # -- queries

    def _load(self, split: str) -> list[Query]:
        rows, where, indices = self.data.rows(split)
        cols = self.columns
        require_columns(rows, {arg: cols[arg] for arg in ("question_column", "answers_column")},
                        where)
        has_level = cols["difficulty_column"] in rows.column_names
        query_id = QueryIds(split, cols["id_column"] if cols["id_column"] in rows.column_names
                            else None)
        out = []
        for i in indices:
            row = rows[int(i)]
            at = f"{where}, row {i}"
            question = prepare_question(str(row[cols["question_column"]]), self.question_mark)
            if not question:
                raise ValueError(f"{at}: the question is empty")
            qid = query_id(row, i, at)
            golds = _answers(row[cols["answers_column"]], at)
            out.append(Query(
                query_id=qid,
                difficulty=_difficulty(row[cols["difficulty_column"]], at) if has_level else 1,
                prompt=self.prompt_template.format(question=question),
                data={"question": question, "golden_answers": golds},
            ))
        return out

    def queries(self, split: str) -> list[Query]:
        """The rows of the `split` data, read once."""
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return list(self._splits[split])

    def check(self) -> None:
        """Load both splits now (before Ray starts): a missing file or column fails here."""
        check_splits(self)

    # -- reading completions: as every search-agent task does (agent.py, metrics/search.py)

    def is_correct(self, query: Query, completion: str) -> bool:
        """The last <answer> against any gold answer, by `match` (Search-R1's scoring)."""
        return agent.answer_matches(self.extract_answer(completion), query.data["golden_answers"],
                                    self.match)

    split_steps = staticmethod(agent.split_steps)
    extract_answer = staticmethod(agent.extract_answer)
    solution_key = staticmethod(agent.solution_key)
    extra_metrics = staticmethod(search_figures)

    def reference_solutions(self, query: Query) -> list[str]:
        """None: real QA data has answers but no gold search trajectories."""
        return []

    # -- the embedded base model of `base_model_task` (CPU runs only)

    def _base_task(self) -> EmbeddedModel:
        from selftrain.config import ConfigError
        from selftrain.tasks import abilities, make_task

        spec = self.base_model_task
        if spec is None:
            raise ConfigError("searchqa has no embedded base model: set model.path to a HF "
                              "model (configs/nq_search_compare.yaml), or task.args."
                              "base_model_task for a CPU run (configs/nq_search_cpu.yaml)")
        embedded = abilities(make_task(spec["name"], **spec.get("args", {}))).embedded_model
        if embedded is None:
            raise ConfigError(f"searchqa task.args.base_model_task: task {spec['name']!r} has "
                              f"no embedded base model")
        return embedded

    def describe(self) -> dict[str, Any]:
        """The base model's cache key: `base_model_task`'s own description."""
        return self._base_task().describe()

    def demonstrations(self, levels: Sequence[int], per_query: int, seed: int,
                       extra_per_level: int | None = None) -> list[Demonstration]:
        """`base_model_task`'s demonstrations: the embedded policy is that task's."""
        return self._base_task().demonstrations(levels, per_query, seed, extra_per_level)
