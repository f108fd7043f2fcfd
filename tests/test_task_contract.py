"""The task contract (selftrain/tasks/base.py): the abilities of the built-in tasks, the checks
`make_task` runs once, and one `demonstrations` signature and shape for every task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selftrain.config import TinyModelConfig
from selftrain.models.tiny_model import ensure_tiny_model
from selftrain.tasks import Demonstration, abilities, check_task, make_task
from selftrain.types import Query


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GSM8K_ROWS = [{"question": f"Tom has {i} apples and gets 2 more. How many?",
               "answer": f"{i}+2={i + 2}\n#### {i + 2}", "level": f"Level {1 + i % 2}"}
              for i in range(6)]


def test_abilities_of_the_built_in_tasks(tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Who?", "golden_answers": ["Lumo"]}])
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    found = {
        "countdown": abilities(make_task("countdown")),
        "multihop": abilities(make_task("multihop", cache_dir=str(tmp_path))),
        "searchqa": abilities(make_task("searchqa", train=str(data), test=str(data))),
        "math": abilities(make_task("math", train=str(gsm8k), test=str(gsm8k))),
        "math with levels": abilities(make_task("math", train=str(gsm8k), test=str(gsm8k),
                                                level_column="level")),
    }
    have = {name: sorted(k for k, v in vars(a).items() if v is not None)
            for name, a in found.items()}
    assert have == {
        "countdown": ["embedded_model", "formats"],
        "multihop": ["agent", "embedded_model", "figures"],
        # its embedded model is base_model_task's; without one, describe() says what to set
        "searchqa": ["agent", "embedded_model", "figures", "input_check"],
        "math": ["chat_message", "embedded_model", "formats", "input_check", "policy_levels"],
        # the hooks are there, but levels come from the data: the driver must not ask
        "math with levels": ["chat_message", "embedded_model", "formats", "input_check"],
    }


class Partial:
    """A task that took levels from the policy but forgot how to restore them on resume."""

    name, stop = "partial", ()
    needs_policy_difficulty = True

    def queries(self, split): return []
    def split_steps(self, completion): return [completion]
    def extract_answer(self, completion): return None
    def is_correct(self, query, completion): return False
    def solution_key(self, steps): return ""
    def reference_solutions(self, query): return []
    def assign_difficulty(self, solve_rates): return {}


class OldDemonstrations(Partial):
    """The embedded-model ability with the signature math had (no `extra_per_level`)."""

    def set_difficulty(self, levels): pass
    def describe(self): return {}
    def demonstrations(self, levels, per_query=1, seed=0): return []


def test_make_task_rejects_a_partial_ability_and_a_wrong_signature():
    with pytest.raises(TypeError, match=r"has needs_policy_difficulty, assign_difficulty but "
                                        r"not set_difficulty: the PolicyLevels ability"):
        check_task(Partial())
    with pytest.raises(TypeError, match=r"demonstrations\(\) does not take extra_per_level"):
        check_task(OldDemonstrations())
    with pytest.raises(TypeError, match="object is not a task: it lacks name, stop, queries"):
        check_task(object())


def test_every_embedded_task_gives_demonstrations_of_one_shape(tmp_path):
    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    tasks = [make_task("countdown", levels=[2, 3], train_per_level=4, test_per_level=2),
             make_task("multihop", levels=[1, 2], train_per_level=4, test_per_level=2,
                       cache_dir=str(tmp_path)),
             make_task("math", train=str(gsm8k), test=str(gsm8k))]
    for task in tasks:
        demos = abilities(task).embedded_model.demonstrations([2], 2, 0, 3)
        assert demos and all(isinstance(d, Demonstration) for d in demos)
        assert all(d.prompt and d.completion for d in demos)
    countdown, multihop, math = (t.demonstrations([2], 2, 0, 3) for t in tasks)
    # 3 queries each; a level-2 countdown query has one solution, so per_query=2 gives one
    assert len({d.prompt for d in countdown}) == 3 and len(multihop) == len(math) == 3
    assert all(d.masked_spans == () for d in countdown + math)
    assert all(d.completion[a:b].startswith("\n<information>")
               for d in multihop for a, b in d.masked_spans)


def test_math_builds_its_base_model_with_sft_queries_per_level(tmp_path):
    """`model.tiny.sft_queries_per_level` used to stop math with a TypeError (its
    `demonstrations` did not take `extra_per_level`); now it adds that many pool queries."""
    data = write_jsonl(tmp_path / "math.jsonl", GSM8K_ROWS)
    task = make_task("math", train=str(data), test=str(data), level_column="level")
    cfg = TinyModelConfig(sft_steps=2, sft_batch_size=4, sft_levels=[1],
                          sft_queries_per_level={"2": 2})
    path = ensure_tiny_model(task, cfg, tmp_path / "models")
    info = json.loads((path / "selftrain_base.json").read_text())
    assert info["demonstrations"] == 3 + 2  # every level-1 query, then 2 of level 2
    assert info["sft"]["steps"] == 2


def test_a_query_is_the_same_whichever_split_asks_first():
    """The level streams are shared by the splits and the demonstrations: asking for them in
    another order never changes which query an id names."""
    a = make_task("countdown", levels=[2, 3], train_per_level=5, test_per_level=3)
    b = make_task("countdown", levels=[2, 3], train_per_level=5, test_per_level=3)
    demos_first = b.demonstrations([3], 1, 0, 4)
    assert b.queries("train") == a.queries("train") and b.queries("test") == a.queries("test")
    assert demos_first == a.demonstrations([3], 1, 0, 4)
    assert all(isinstance(q, Query) for q in a.queries("test"))
