"""The math task: answer extraction and equivalence (math-verify), steps, levels, difficulty from
the base policy, GSM8K / MATH loading, and one round of the loop on a GSM8K-format file."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pandas as pd
import pytest

from selftrain.config import ConfigError
from selftrain.tasks import make_task
from selftrain.tasks.data import parse_level
from selftrain.tasks.math import MathTask, quantile_levels, split_steps
from selftrain.tasks.math_answers import answers_match, extract_final_answer

# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("gold, pred, same", [
    ("1/2", "0.5", True),                          # fraction vs decimal
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("0.5", "\\frac12", True),
    ("3.50", "3.5", True),                         # trailing zeros
    ("12", "12.", True),
    ("12", "12.0", True),
    ("0.1", "0.10000", True),
    ("0.333", "1/3", False),                       # plain numbers compare exactly
    ("1000", "1,000", True),                       # thousands separators
    ("1,000,000", "1000000", True),
    ("15", "1,5", False),                          # not a thousands separator
    ("5", "$5", True),                             # dollar signs
    ("5", "\\$5.00", True),
    ("5", "$5$", True),                            # math mode
    ("5", "5 dollars", True),                      # a trailing unit word
    ("-3", "-3.0", True),                          # negative numbers
    ("-7", "7", False),
    ("7", "-7", False),
    ("2", "3", False),
    ("x+1", "1+x", True),                          # symbolic, through math-verify
    ("\\sqrt{2}", "2^{1/2}", True),
    ("(1,2)", "(1, 2)", True),
    ("\\text{(A)}", "A", True),
    ("\\pi", "3.14159", False),
    ("5", "", False),
    ("5", None, False),
    ("5", "((((((((((", False),                    # garbage is wrong, not an error
    ("\\frac{1}{2}", "\\frac{1}{", False),
])
def test_answer_equivalence(gold, pred, same):
    assert answers_match(gold, pred) is same


def test_math_verify_agrees_on_the_latex_cases():
    """The non-numeric rows above are math-verify's verdicts, not a rule of ours."""
    from math_verify import parse, verify

    assert verify(parse("$\\frac{1}{2}$"), parse("$0.5$"))
    assert verify(parse("$x+1$"), parse("$1+x$"))
    assert not verify(parse("$\\pi$"), parse("$3.14159$"))


@pytest.mark.parametrize("text, answer", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),   # GSM8K
    ("#### 1,000", "1000"),
    ("So the total is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),           # MATH
    ("\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}", "\\left(3, \\frac{\\pi}{2}\\right)"),
    ("first \\boxed{1}, finally \\boxed{2}", "2"),                         # the last box
    ("\\boxed{3} then a cut-off \\boxed{\\frac{1", "3"),                   # unclosed box skipped
    ("\\fbox{4}", "4"),
    ("\\boxed 5", "5"),
    ("The answer is 12.", "12"),                                           # plain statement
    ("The answer is $-3.5$. Then more text.", "-3.5"),
    ("Final Answer: The final answer is $\\boxed{7}$. I hope it is correct.", "7"),
    ("answer: 12 apples", "12"),
    ("#### 5\nWait, no. The answer is 6", "6"),                            # the last marker wins
    ("The answer is \\boxed{8}.", "8"),
    ("no marker at all, 42", None),
    ("The answer is", None),
    ("", None),
])
def test_extracting_the_final_answer(text, answer):
    assert extract_final_answer(text) == answer


def test_a_named_answer_format_only_reads_its_own_marker():
    text = "\\boxed{3}\n#### 4"
    assert extract_final_answer(text, "boxed") == "3"
    assert extract_final_answer(text, "gsm8k") == "4"
    assert extract_final_answer(text, "answer_is") is None
    assert extract_final_answer(" 1,000 ", "plain") == "1000"


def test_checking_works_off_the_main_thread():
    """math-verify's SIGALRM timeout only works in the main thread; elsewhere we run without."""
    results = []
    thread = threading.Thread(target=lambda: results.append(
        (answers_match("\\frac{1}{2}", "0.5"), answers_match("x+1", "x+2"))))
    thread.start()
    thread.join()
    assert results == [(True, False)]


def test_a_math_verify_failure_or_timeout_is_just_wrong(monkeypatch):
    import math_verify
    from math_verify.errors import TimeoutException

    def boom(*args, **kwargs):
        raise TimeoutException("too slow")

    monkeypatch.setattr(math_verify, "verify", boom)
    assert answers_match("y^2", "y*y") is False
    monkeypatch.setattr(math_verify, "verify", lambda *a, **k: 1 / 0)
    assert answers_match("y^3", "y*y*y") is False
    assert answers_match("1,000", "1000") is True  # plain numbers never reach math-verify


# ---------------------------------------------------------------- steps and levels


def test_steps_are_lines_or_sentences():
    text = "  First, 3.5 apples cost $7. Then e.g. x is 5!\n\n#### 5\n"
    assert split_steps(text) == ["First, 3.5 apples cost $7. Then e.g. x is 5!", "#### 5"]
    assert split_steps(text, "sentences") == ["First, 3.5 apples cost $7.",
                                              "Then e.g. x is 5!", "#### 5"]


@pytest.mark.parametrize("value, level", [
    ("Level 3", 3), ("level 5", 5), (4, 4), ("2", 2), (2.0, 2), ("hard", 3),
    ("Level ?", None), (None, None), (True, None),
])
def test_level_parsing(value, level):
    assert parse_level(value) == level


def test_quantile_levels_put_the_lowest_solve_rates_at_the_top():
    # distinct rates: equal buckets, lowest rate = level 3
    rates = {f"q{i}": i / 10 for i in range(6)}
    assert quantile_levels(rates, 3) == {"q0": 3, "q1": 3, "q2": 2, "q3": 2, "q4": 1, "q5": 1}
    # ties share a level; the lowest rate is always the top level
    tied = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.5, "f": 1.0}
    assert quantile_levels(tied, 3) == {"a": 3, "b": 3, "c": 3, "d": 3, "e": 1, "f": 1}
    assert set(quantile_levels({"a": 1.0, "b": 1.0}, 3).values()) == {3}
    assert set(quantile_levels(rates, 1).values()) == {1}


# ---------------------------------------------------------------- data files

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?",
     "answer": "Tom has 3+4=<<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 5 pens. How many pens are in 3 boxes?",
     "answer": "3 boxes hold 3*5=<<3*5=15>>15 pens.\n#### 15"},
    {"question": "Sam saved 1,200 dollars and spent 200. How much is left?",
     "answer": "Sam has 1200-200=<<1200-200=1000>>1000 dollars left.\n#### 1,000"},
]

MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "solution":
     "We add: $\\frac{1}{2}+\\frac{1}{4}=\\frac{3}{4}$. So the answer is $\\boxed{\\frac{3}{4}}$.",
     "level": "Level 2", "type": "Prealgebra", "uid": "p1"},
    {"problem": "Solve $x^2=9$ for $x>0$.", "solution": "Since $x>0$, $x=\\boxed{3}$.",
     "level": "Level 1", "type": "Algebra", "uid": "p2"},
    {"problem": "Simplify $\\sqrt{8}$.", "solution": "$\\sqrt{8}=\\boxed{2\\sqrt{2}}$.",
     "level": "Level 4", "type": "Algebra", "uid": "p3"},
    {"problem": "A level-less problem.", "solution": "$\\boxed{1}$",
     "level": "Level ?", "type": "Geometry", "uid": "p4"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def gsm8k(tmp_path) -> MathTask:
    data = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    return make_task("math", train=str(data), test=str(data))


def test_gsm8k_jsonl_loads_with_answers_steps_and_unknown_difficulty(gsm8k):
    queries = gsm8k.queries("train")
    assert [q.query_id for q in queries] == ["train-000000", "train-000001", "train-000002"]
    assert [q.data["answer"] for q in queries] == ["7", "15", "1000"]
    assert {q.difficulty for q in queries} == {1}
    assert gsm8k.needs_policy_difficulty
    q = queries[0]
    assert q.prompt == f"Question: {GSM8K_ROWS[0]['question']}\nSolution:\n"
    # the reference solution drops GSM8K's calculator notes and is itself correct
    [ref] = gsm8k.reference_solutions(q)
    assert ref == "Tom has 3+4=7 apples.\n#### 7\n"
    assert gsm8k.is_correct(q, ref)
    assert gsm8k.split_steps(ref) == ["Tom has 3+4=7 apples.", "#### 7"]
    assert gsm8k.solution_key(gsm8k.split_steps(ref)) == "tomhas3+4=7apples.|####7"
    assert gsm8k.is_correct(queries[2], "So $1,000 is left.\n#### $1,000.00")
    assert not gsm8k.is_correct(queries[2], "So 100 is left.\n#### 100")
    assert gsm8k.extract_answer("It is 7 apples") is None


def test_math_parquet_loads_with_custom_columns_and_levels(tmp_path):
    data = tmp_path / "math.parquet"
    pd.DataFrame(MATH_ROWS).to_parquet(data)
    with pytest.warns(UserWarning, match="skipped 1 row"):  # "Level ?"
        task = MathTask(train=str(data), test=str(data), question_column="problem",
                        answer_column="solution", level_column="level", id_column="uid",
                        step_split="sentences")
        queries = task.queries("test")
    assert [(q.query_id, q.difficulty, q.data["answer"]) for q in queries] == [
        ("test-p1", 2, "\\frac{3}{4}"), ("test-p2", 1, "3"), ("test-p3", 4, "2\\sqrt{2}")]
    assert not task.needs_policy_difficulty
    assert task.is_correct(queries[0], "It is 0.75, so the answer is $\\boxed{0.75}$.")
    assert task.is_correct(queries[2], "The answer is \\boxed{\\sqrt{8}}")
    assert task.split_steps(task.reference_solutions(queries[0])[0]) == [
        "We add: $\\frac{1}{2}+\\frac{1}{4}=\\frac{3}{4}$.",
        "So the answer is $\\boxed{\\frac{3}{4}}$."]
    # demonstrations follow the level column: only the levels asked for
    with pytest.warns(UserWarning):
        demos = task.demonstrations(levels=[1, 2], per_query=4, seed=0)
    assert [d.prompt for d in demos] == [q.prompt for q in queries[:2]]


def test_max_rows_keep_a_seeded_subset_in_file_order(tmp_path):
    rows = [{"question": f"What is {i}+1?", "answer": f"#### {i + 1}"} for i in range(20)]
    data = write_jsonl(tmp_path / "many.jsonl", rows)
    ids = [q.query_id for q in MathTask(str(data), str(data), max_train=5, seed=1).queries("train")]
    assert len(ids) == 5 and ids == sorted(ids)
    assert ids == [q.query_id for q in MathTask(str(data), str(data), max_train=5,
                                                seed=1).queries("train")]


def test_a_missing_column_names_the_file_the_column_and_the_setting(tmp_path):
    data = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    task = MathTask(train=str(data), test=str(data), question_column="problem")
    with pytest.raises(ConfigError) as err:
        task.check()
    message = str(err.value)
    assert str(data) in message and "'problem'" in message
    assert "task.args.question_column" in message and "'question'" in message  # what it has


def test_bad_files_and_answers_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        MathTask(str(tmp_path / "missing.jsonl"), str(tmp_path / "missing.jsonl")).check()
    with pytest.raises(ValueError, match="not a .json, .jsonl or .parquet"):
        MathTask(str(tmp_path / "data.csv"), str(tmp_path / "data.csv")).queries("train")
    data = write_jsonl(tmp_path / "bare.jsonl", [{"question": "1+1?", "answer": "two"}])
    with pytest.raises(ConfigError, match="row 0: column 'answer' has no final answer"):
        MathTask(str(data), str(data)).check()
    with pytest.raises(ValueError, match="must contain {question}"):
        MathTask(str(data), str(data), prompt_template="Q: ")


def test_difficulty_from_the_base_policy(tmp_path):
    rows = [{"question": f"What is {i}+1?", "answer": f"#### {i + 1}"} for i in range(6)]
    data = write_jsonl(tmp_path / "six.jsonl", rows)
    task = MathTask(str(data), str(data))
    pool = [q.query_id for q in task.queries("train")]
    test = [q.query_id for q in task.queries("test")]
    rates = dict(zip(pool, [1.0, 1.0, 0.75, 0.5, 0.25, 0.0])) | dict(zip(test, [0.0] * 6))
    levels = task.assign_difficulty(rates)
    assert levels == quantile_levels(rates, 3)
    assert [q.difficulty for q in task.queries("train")] == [1, 1, 1, 1, 2, 3]
    assert {q.difficulty for q in task.queries("test")} == {3}
    # a resumed run restores the saved levels into a fresh task
    again = MathTask(str(data), str(data))
    again.set_difficulty(json.loads(json.dumps(levels)))
    assert again.queries("train") == task.queries("train")
    with pytest.raises(ValueError, match="unknown query id"):
        task.assign_difficulty({"nope": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        task.assign_difficulty({pool[0]: 3})


def test_chat_template_wraps_the_instruction(tmp_path):
    """With model.chat_template, math's user turn is the instruct instruction, rendered with
    the policy tokenizer's template (and a system turn when model.system_prompt is set)."""
    from selftrain.config import Config
    from selftrain.loop.prompts import PromptFormat
    from selftrain.models.tiny_model import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    data = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)
    task = MathTask(str(data), str(data))
    cfg = Config()
    cfg.model.chat_template, cfg.model.system_prompt = True, "Be brief."
    (query,) = PromptFormat.of(cfg, tok, "tok").queries(task, task.queries("train")[:1])
    instruction = (f"{GSM8K_ROWS[0]['question']}\nPlease reason step by step, and put your "
                   f"final answer within \\boxed{{}}.")
    assert query.prompt == f"<system>Be brief.\n<user>{instruction}\n<assistant>"
    assert query.user_message == instruction
    assert task.queries("train")[0].prompt.startswith("Question: ")  # the base-model prompt
    with pytest.raises(ConfigError, match="has no chat template"):
        PromptFormat.of(cfg, build_char_tokenizer(), "the tiny model")


# ---------------------------------------------------------------- one round of the loop


def arithmetic_rows(n: int, seed: int) -> list[dict]:
    """GSM8K-format one-step word problems, ASCII only (the tiny model reads characters)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        kind = rng.choice(["add", "mul"])
        if kind == "add":
            q, c = f"Ann has {a} pens and gets {b} more. How many pens?", a + b
            sol = f"Ann has {a}+{b}=<<{a}+{b}={c}>>{c} pens.\n#### {c}"
        else:
            q, c = f"A bag holds {a} nuts. How many nuts in {b} bags?", a * b
            sol = f"{b} bags hold {b}*{a}=<<{b}*{a}={c}>>{c} nuts.\n#### {c}"
        rows.append({"question": q, "answer": sol})
    return rows


@pytest.fixture(scope="module")
def math_run(tmp_path_factory, ray_cluster, model_cache):
    from conftest import small_config

    from selftrain.loop.driver import run_arm

    tmp = tmp_path_factory.mktemp("math")
    train = write_jsonl(tmp / "train.jsonl", arithmetic_rows(12, seed=0))
    test = write_jsonl(tmp / "test.jsonl", arithmetic_rows(6, seed=1))
    args = {"train": str(train), "test": str(test), "difficulty_buckets": 3}
    cfg = small_config(tmp, model_cache, "task.name=math", f"task.args={json.dumps(args)}",
                       "rollout.max_new_tokens=40", "experiment=math_rs")
    history = run_arm(cfg, "rs")
    return cfg, history, tmp / "runs" / cfg.experiment / "rs" / "seed0"


def test_one_round_of_math_with_difficulty_from_the_base_policy(math_run):
    from selftrain.runfolder.folder import verify

    cfg, history, run = math_run
    assert sorted(history) == [0, 1]
    samples = pd.read_parquet(run / "round_0" / "samples.parquet")
    assert len(samples) == 12 * cfg.rollout.num_samples
    task = make_task("math", **cfg.task.args)
    by_id = {q.query_id: q for q in task.queries("train")}
    for row in samples.itertuples():  # the stored verdicts are the task's
        assert row.correct == task.is_correct(by_id[row.query_id], row.completion)
    # The driver's hook: levels from round 0's solve rates, for pool and test queries.
    levels = json.loads((run / "round_0" / "difficulty.json").read_text())
    assert set(levels) == set(by_id) | {q.query_id for q in task.queries("test")}
    assert set(levels.values()) <= {1, 2, 3}
    test_levels = {levels[q.query_id] for q in task.queries("test")}
    for k in (0, 1):
        metrics = json.loads((run / f"round_{k}" / "metrics.json").read_text())
        assert {key for key in metrics if key.startswith("acc@")} == {
            f"acc@{lv}" for lv in test_levels}
    evals = pd.read_parquet(run / "round_1" / "eval.parquet")
    assert (evals["difficulty"] == evals["query_id"].map(levels)).all()
    assert verify(run) == []


def test_resume_after_the_difficulty_stage_restores_the_levels(math_run, tmp_path):
    """Cut the finished run back to round 0's difficulty stage, resume in a fresh task object:
    the levels come back from difficulty.json and every later file equals the original."""
    import shutil

    from conftest import assert_same_rounds

    from selftrain.config import load_config
    from selftrain.loop.driver import run_arm

    cfg, _, run = math_run
    root = tmp_path / "runs"
    copy = root / cfg.experiment / "rs" / "seed0"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("wandb", "ray_train", ".lock*"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["rounds"] = {"0": {s: e for s, e in manifest["rounds"]["0"].items()
                                if s in ("generate", "evaluate", "difficulty")}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(copy / "round_1")
    for name in ("train.parquet", "metrics.json"):
        (copy / "round_0" / name).unlink()

    resumed = load_config(run / "config.yaml", [f"run_root={root}", "tracking.enabled=false"])
    run_arm(resumed, "rs", resume=True)
    assert_same_rounds(copy, run, (0, 1), ("samples.parquet", "train.parquet", "eval.parquet"))
