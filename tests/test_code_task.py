"""The embedded code task, its execution critic and the code figures, on hand-made programs
with known answers (no Ray, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from critics import CritiqueRequest
from critics.registry import build_critic
from selftrain.metrics import code as figures
from selftrain.tasks import make_task

SUM_EVENS = "# if x % 2 == 0 | sum\ndef f(xs):\n"


@pytest.fixture(scope="module")
def task():
    return make_task("code", seed=0, levels=[2, 3], train_per_level=6, test_per_level=4)


def test_normalisation_ignores_names_formatting_and_docstrings():
    a = "def f(xs):\n    '''doc'''\n    ys = [x * 2 for x in xs]  # twice\n    return sum(ys)\n"
    b = "def f(items):\n    out=[v*2 for v in items]\n    return sum(out)"
    c = "def f(xs):\n    return sum(map(lambda x: x * 2, xs))"
    assert figures.normalise_program(a) == figures.normalise_program(b)
    assert figures.normalise_program(a) != figures.normalise_program(c)
    # two queries: {a, b, c} -> 2 distinct, {c} -> 1; mean 1.5
    assert figures.distinct_programs([[a, b, c], [c]]) == 1.5
    # the passing group counts a query with none passing as 0
    assert figures.distinct_programs([[a], []], passing=True) == 0.5
    assert figures.distinct_programs([[a], []]) == 1.0


def test_ast_distinct_n_by_hand():
    assert figures.node_types("x = 1") == ["Module", "Assign", "Name", "Store", "Constant"]
    # identical programs: n=1: 5 unique of 10, n=2: 4 of 8, n=3: 3 of 6, n=4: 2 of 4 -> 0.5
    assert figures.ast_distinct_n([["x = 1", "y = 2"]]) == pytest.approx(0.5)
    assert figures.ast_distinct_n([["x = 1"], ["y = 2"]]) is None  # no query with 2 programs
    # "x = 1" vs "x" (Module Expr Name Load), "def (" does not parse and is left out:
    # n=1 7 unique of 9; n=2..4 all unique (7/7, 5/5, 3/3)
    expected = (7 / 9 + 1 + 1 + 1) / 4
    assert figures.ast_distinct_n([["x = 1", "x", "def ("]]) == pytest.approx(expected)


def test_behaviour_classes_and_status_shares_by_hand():
    assert figures.behaviour_classes([["1|2", "1|2", "1|3"], ["!error"]]) == 1.5
    assert figures.behaviour_classes([[], ["a"]], passing=True) == 0.5
    shares = figures.status_shares(["passed", "timeout", "error", "error", "failed"])
    assert shares == {"exec_timeout_share": 0.2, "exec_memory_share": 0.0, "exec_error_share": 0.4}
    assert figures.status_shares([])["exec_error_share"] is None


def test_reference_solutions_vary_and_pass(task):
    for query in task.queries("test"):
        solutions = task.reference_solutions(query, k=4)
        assert len(solutions) == 4
        assert len({task.solution_key(task.split_steps(s)) for s in solutions}) == 4
        assert all(task.is_correct(query, s) for s in solutions)
        assert query.prompt.endswith("def f(xs):\n")
        assert len(query.data["tests"]) == 3 and len(query.data["extra_inputs"]) == 5
    levels = {q.difficulty for q in task.queries("train")}
    assert levels == {2, 3}
    shortest = {q.difficulty: min(len(task.split_steps(s)) for s in task.reference_solutions(q, 50))
                for q in task.queries("train")}
    assert shortest == {2: 2, 3: 3}  # one line per operation at the shortest


def _query_for(task, ops, tests, extra):
    from selftrain.types import Query
    return Query("code-hand-0", 2, SUM_EVENS,
                 data={"ops": ops, "tests": tests, "extra_inputs": extra})


def test_execution_critic_flags_the_line_that_went_wrong(task):
    query = _query_for(task, [["filter", "x % 2 == 0"], ["final", "sum"]],
                       ["assert f([1, 2, 4]) == 6", "assert f([3]) == 0"], [[[1, 2]], [[]]])
    critic = build_critic("code-exec", None, {}, task)
    bodies = {
        "right": "    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)\n",
        "raises": "    xs = [x for x in xs if x % 2 == 0]\n    xs = xs / 0\n    return sum(xs)\n",
        "wrong": "    xs = [x for x in xs if x % 2 == 1]\n\n    return sum(xs)\n",
        "syntax": "    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs))\n",
        "loops": "    while True:\n        pass\n",
    }
    requests = [CritiqueRequest(name, query, task.split_steps(body), body)
                for name, body in bodies.items()]
    task.runner.timeout_s = 0.5
    try:
        out = {c.sample_id: c for c in critic.critique(requests)}
    finally:
        task.runner.timeout_s = 2.0
    assert out["right"].first_error == -1
    assert out["raises"].first_error == 1 and "TypeError" in out["raises"].verdicts[1].feedback
    # the wrong filter makes no exception: the test's value was final at the return line
    assert out["wrong"].first_error == 1 and "assert f([1, 2, 4]) == 6" in out["wrong"].feedback
    assert out["syntax"].first_error == 1
    assert out["loops"].first_error == 1 and "time" in out["loops"].verdicts[1].feedback
    assert task.is_correct(query, bodies["right"]) and not task.is_correct(query, bodies["wrong"])


def test_code_figures_of_a_round(task):
    query = task.queries("test")[0]
    refs = task.reference_solutions(query, k=2)
    wrong = "    return 12345\n"
    crash = "    return 1 / 0\n"
    samples = pd.DataFrame({"query_id": [query.query_id] * 4, "origin": ["sample"] * 3 + ["refine"],
                            "completion": [refs[0], wrong, crash, refs[1]]})
    evals = pd.DataFrame({"query_id": [query.query_id] * 3, "completion": [refs[0], refs[1], wrong],
                          "correct": [True, True, False]})
    train = pd.DataFrame({"query_id": [query.query_id] * 2, "completion": refs,
                          "correct": [True, True]})
    got = task.extra_metrics(samples=samples, train=train, evals=evals, test=[query])
    assert got["distinct_programs"] == 2 and got["distinct_programs_passing"] == 2
    assert got["behaviour_classes"] == 1  # two correct programs, same outputs on extra inputs
    assert got["eval_distinct_programs"] == 3 and got["eval_distinct_programs_passing"] == 2
    assert got["eval_behaviour_classes"] == 2 and got["eval_behaviour_classes_passing"] == 1
    assert got["exec_error_share"] == pytest.approx(1 / 3)
    assert got["exec_timeout_share"] == got["exec_memory_share"] == 0.0
    assert got["eval_ast_distinct_n"] is not None and 0 < got["eval_ast_distinct_n"] <= 1


DATA = Path(__file__).resolve().parent / "data"


def test_mbpp_layout_from_a_local_file():
    task = make_task("code_data", train=str(DATA / "mbpp_fixture.jsonl"),
                     test=str(DATA / "mbpp_fixture.jsonl"), layout="mbpp")
    queries = task.queries("test")
    assert [q.query_id for q in queries][:2] == ["test-1", "test-2"]
    assert queries[0].prompt.startswith('"""\nWrite a function to return the sum of the squares')
    assert "assert sum_squares([1, 2, 3]) == 14" in queries[0].prompt
    # levels from the reference's length: 2 lines -> 1, 5 -> 2, 9 -> 3, 11 -> 4
    assert [q.difficulty for q in queries] == [1, 2, 1, 2, 3, 4]
    for q in queries:
        (reference,) = task.reference_solutions(q)
        assert task.is_correct(q, reference), q.query_id
        assert not task.is_correct(q, reference.replace("return", "return 'wrong'  #", 1))
    assert queries[0].data["calls"] == ["sum_squares([1, 2, 3])", "sum_squares([])",
                                        "sum_squares([-2])"]
    demos = task.demonstrations([1], extra_per_level=1)
    assert len(demos) == 1 and demos[0].completion.startswith("def sum_squares")


def test_humaneval_layout_and_its_critic():
    task = make_task("code_data", train=str(DATA / "humaneval_fixture.jsonl"),
                     test=str(DATA / "humaneval_fixture.jsonl"), layout="humaneval")
    first, second = task.queries("test")
    assert first.prompt.startswith("def add_one(xs):") and task.body_offset(first, "") == 5
    assert task.is_correct(first, "    return [x + 1 for x in xs]\n")
    assert not task.is_correct(first, "    return [x + 2 for x in xs]\n")
    assert first.data["calls"] == ["add_one([1, 2])", "add_one([])", "add_one([-1])"]
    body = "    if not words:\n        return None\n    return min(words, key=len)\n"
    (critique,) = build_critic("code-exec", None, {}, task).critique(
        [CritiqueRequest("s", second, task.split_steps(body), body)])
    assert critique.first_error == 2  # the line that returned the wrong word


def test_code_data_names_a_missing_column(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "code": "def f(): pass"}\n')
    task = make_task("code_data", train=str(bad), test=str(bad))
    with pytest.raises(ValueError, match="test_list"):
        task.queries("train")


def test_chat_answers_are_read_from_their_code_block():
    task = make_task("code_data", train=str(DATA / "mbpp_fixture.jsonl"),
                     test=str(DATA / "mbpp_fixture.jsonl"), layout="mbpp")
    query = task.queries("test")[0]
    assert "Your code should pass these tests:\nassert sum_squares([1, 2, 3]) == 14" in \
        task.user_message(query)
    answer = ("Here is the function:\n```python\ndef sum_squares(nums):\n"
              "    return sum(n * 2 for n in nums)\n```\nIt squares each number.")
    assert not task.is_correct(query, answer)
    assert task.is_correct(query, answer.replace("n * 2", "n * n"))
    (critique,) = build_critic("code-exec", None, {}, task).critique(
        [CritiqueRequest("s", query, task.split_steps(answer), answer)])
    assert critique.first_error == 3  # "    return sum(n * 2 ...)", the 4th line of the answer


def test_oracle_critic_searches_the_subset(task):
    query = next(q for q in task.queries("test") if q.difficulty == 3)
    oracle = build_critic("code-oracle", None, {}, task)
    ops = query.data["ops"]
    references = task.reference_solutions(query, k=6)
    wrong_first = references[0].replace(ops[0][1], "x + 99", 1)
    requests = [CritiqueRequest(f"r{i}", query, task.split_steps(r), r)
                for i, r in enumerate([*references, wrong_first])]
    out = oracle.critique(requests)
    assert all(c.passed for c in out[:-1])
    # the first operation's line is the first wrong one, and every later line follows it
    assert out[-1].first_error == next(i for i, s in enumerate(task.split_steps(wrong_first))
                                       if "x + 99" in s)
    assert all(not v.ok for v in out[-1].verdicts[out[-1].first_error:])
    # spaces inside a line do not matter; a line that ends the program too early does
    spaced = references[0].replace(" in xs", "  in  xs")
    assert spaced != references[0]
    short = "    return xs\n"
    got = oracle.critique([CritiqueRequest("a", query, task.split_steps(spaced), spaced),
                           CritiqueRequest("b", query, task.split_steps(short), short)])
    assert got[0].passed and got[1].first_error == 0


def test_code_data_levels_from_the_base_policy():
    data = str(DATA / "mbpp_fixture.jsonl")
    task = make_task("code_data", train=data, test=data, policy_levels=True, difficulty_buckets=2)
    assert task.needs_policy_difficulty
    rates = {"train-1": 1.0, "train-2": 0.5, "test-1": 0.0, "test-2": 0.75}
    # below: 3, 1, 0, 2 of 4 -> level 2 - floor(2 * below / 4)
    assert task.assign_difficulty(rates) == {"train-1": 1, "train-2": 2, "test-1": 2, "test-2": 1}
    assert [q.difficulty for q in task.queries("test")][:2] == [2, 1]
    with pytest.raises(ValueError, match="unknown query ids"):
        task.assign_difficulty({"test-99": 0.5})


def test_a_missing_layout_column_is_named(tmp_path):
    """Every column of the layout is required, not only its last one."""
    rows = [json.loads(line) for line in (DATA / "mbpp_fixture.jsonl").read_text().splitlines()]
    path = tmp_path / "no_text.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n"
                            for r in rows))
    task = make_task("code_data", train=str(path), test=str(path), layout="mbpp")
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\] of the 'mbpp' layout"):
        task.queries("test")
