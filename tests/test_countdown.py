"""The countdown task: generator, solver, step checker, completion reading, registry."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from selftrain.tasks import TASKS, make_task
from selftrain.tasks.countdown import (
    CountdownTask,
    StepCheck,
    check_steps,
    reachable,
    solve,
)
from selftrain.types import Query


@pytest.fixture(scope="module")
def task() -> CountdownTask:
    return CountdownTask()  # default sizes: 60 train + 25 test per level, levels 2..5


@pytest.fixture
def q23() -> Query:
    """3 7 2 -> 23: the one solution family is 7*3=21, 21+2=23."""
    return Query("cd-hand", 3, "3 7 2 -> 23\n", {"numbers": [3, 7, 2], "target": 23})


def key(q: Query) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(q.data["numbers"])), q.data["target"]


# ---------------------------------------------------------------- generator


def test_same_seed_same_queries_other_seed_other_queries():
    small = {"train_per_level": 8, "test_per_level": 4}
    a = CountdownTask(seed=0, **small)
    b = CountdownTask(seed=0, **small)
    c = CountdownTask(seed=1, **small)
    assert [q.prompt for q in a.queries("train")] == [q.prompt for q in b.queries("train")]
    assert a.queries("test") == b.queries("test")
    assert [q.prompt for q in a.queries("train")] != [q.prompt for q in c.queries("train")]


def test_query_ids_name_the_same_query_whatever_the_split_sizes():
    small = CountdownTask(train_per_level=5, test_per_level=3)
    big = CountdownTask(train_per_level=9, test_per_level=3)
    by_id = {q.query_id: q for q in big.queries("train")}
    for q in small.queries("train"):
        assert by_id[q.query_id] == q


def test_splits_are_balanced_disjoint_and_well_formed(task):
    train, test = task.queries("train"), task.queries("test")
    assert Counter(q.difficulty for q in train) == {2: 60, 3: 60, 4: 60, 5: 60}
    assert Counter(q.difficulty for q in test) == {2: 25, 3: 25, 4: 25, 5: 25}
    assert len({q.query_id for q in train + test}) == len(train) + len(test)
    assert not {key(q) for q in train} & {key(q) for q in test}
    assert len({key(q) for q in train}) == len(train)  # no repeats inside a split either
    q = train[0]
    assert q.query_id.startswith(f"cd-L{q.difficulty}-")
    numbers, target = q.data["numbers"], q.data["target"]
    assert q.prompt == " ".join(map(str, numbers)) + f" -> {target}\n"
    assert len(numbers) == q.difficulty


def test_every_query_is_solvable_and_its_solutions_are_correct(task):
    for q in task.queries("train") + task.queries("test"):
        numbers, target = q.data["numbers"], q.data["target"]
        assert all(1 <= x <= 12 for x in numbers) and 10 <= target <= 99
        solutions = solve(numbers, target, limit=3)
        assert solutions, q
        for steps in solutions:
            assert len(steps) == q.difficulty - 1  # every solution uses all n numbers
            assert task.is_correct(q, "".join(s + "\n" for s in steps))


def test_no_strict_subset_reaches_the_target(task):
    for q in task.queries("train") + task.queries("test"):
        numbers, target = q.data["numbers"], q.data["target"]
        assert target not in numbers
        for size in range(1, len(numbers)):
            for subset in itertools.combinations(numbers, size):
                assert not reachable(subset, target), (q, subset)


def test_solver_finds_all_orders_and_respects_the_rules():
    assert solve([3, 7, 2], 23) == [["7*3=21", "21+2=23"]]
    solutions = solve([2, 3, 4, 5], 26)
    assert ["3*2=6", "6*5=30", "30-4=26"] in solutions
    # Independent steps in either order are two solutions.
    assert ["3*2=6", "5*4=20", "20+6=26"] in solutions
    assert ["5*4=20", "3*2=6", "20+6=26"] in solutions
    assert len({"|".join(s) for s in solutions}) == len(solutions)
    assert len(solve([2, 3, 4, 5], 26, limit=2)) == 2
    assert solve([7, 2], 3) == []  # 7/2 is not exact, so 3 is out of reach
    assert reachable([5, 9], 9) and not reachable([4, 2], 23)


def test_reference_solutions_are_correct_distinct_and_seeded(task):
    q = next(q for q in task.queries("train") if q.difficulty == 5)
    refs = task.reference_solutions(q, k=4)
    assert len(refs) == 4 and all(task.is_correct(q, r) for r in refs)
    assert len({task.solution_key(task.split_steps(r)) for r in refs}) == 4
    assert task.reference_solutions(q, k=4) == refs
    assert all(r.endswith("\n") for r in refs)


def test_demonstrations_come_from_fresh_queries_never_pool_or_test(task):
    demos = task.demonstrations(levels=[2, 3], per_query=2, seed=0, extra_per_level=10)
    test_prompts = {q.prompt for q in task.queries("test")}
    train_prompts = {q.prompt for q in task.queries("train") if q.difficulty in (2, 3)}
    prompts = {d.prompt for d in demos}
    assert not prompts & test_prompts
    assert not prompts & train_prompts  # self-training starts on queries the model never saw
    assert len(prompts) == 20
    for demo in demos:
        numbers, target = demo.prompt.split(" -> ")
        q = Query(
            "demo", 0, demo.prompt, {"numbers": [int(x) for x in numbers.split()], "target": int(target)}
        )
        assert task.is_correct(q, demo.completion) and demo.masked_spans == ()


# ---------------------------------------------------------------- step checker


def test_a_correct_solution_passes_every_check(q23):
    checks = check_steps(q23.data["numbers"], 23, ["7*3=21", "21+2=23"])
    assert checks == [StepCheck(True, True, True, True, True, "")] * 2


def test_wrong_arithmetic_is_named_with_the_right_result(q23):
    (check,) = check_steps([3, 7, 2], 23, ["7*3=22"])
    assert not check.ok and check.parsed and not check.arithmetic_ok
    assert check.reason == "7*3=22 is wrong: 7*3=21"


def test_division_must_be_exact_and_results_positive():
    assert check_steps([7, 2, 5], 30, ["7/2=3"])[0].reason == "7/2 is not an exact division"
    assert check_steps([3, 7, 2], 23, ["3-7=-4"])[0].reason == "3-7 is not a positive number"
    assert not check_steps([3, 7, 2], 23, ["3-3=0"])[0].arithmetic_ok


def test_a_number_can_be_used_only_as_often_as_it_is_available(q23):
    (reused,) = check_steps([3, 7, 2], 23, ["7*7=49"])
    assert not reused.ok and reused.arithmetic_ok and not reused.operands_available
    assert "only one" in reused.reason
    (missing,) = check_steps([3, 7, 2], 23, ["8+3=11"])
    assert missing.reason == "8 is not available (have 2 3 7)"
    # A consumed number is gone; a produced one is available.
    checks = check_steps([3, 7, 2], 23, ["7*3=21", "7+2=9"])
    assert checks[1].reason == "7 is not available (have 2 21)"


def test_a_legal_step_that_loses_the_target_is_not_ok(q23):
    (check,) = check_steps([3, 7, 2], 23, ["7-3=4"])
    assert check.arithmetic_ok and check.operands_available and not check.target_reachable
    assert check.reason == "target 23 cannot be reached from 2 4 anymore"


def test_steps_after_the_target_are_not_ok(q23):
    checks = check_steps([3, 7, 2], 23, ["7*3=21", "21+2=23", "23-1=22"])
    assert [c.ok for c in checks] == [True, True, False]
    assert checks[2].reason == "target already reached"


def test_later_steps_are_still_judged_after_an_invalid_one(q23):
    checks = check_steps([3, 7, 2], 23, ["so 7 times 3", "7*3=22", "7*3=21", "21+2=23"])
    assert [c.ok for c in checks] == [False, False, True, True]
    assert not checks[0].parsed and "cannot read" in checks[0].reason
    # The wrong step was not applied, so its claimed 22 is not available afterwards.
    assert check_steps([3, 7, 2], 23, ["7*3=22", "22+2=24"])[1].reason.startswith("22 is not")


# ---------------------------------------------------------------- reading completions


def test_is_correct_needs_legal_steps_ending_on_the_target(q23, task):
    assert task.is_correct(q23, "7*3=21\n21+2=23\n")
    assert task.is_correct(q23, " 7 * 3 = 21 \n\n21+2=23")  # spacing does not matter
    assert not task.is_correct(q23, "7*3=21\n")  # legal, but stops short
    assert not task.is_correct(q23, "7*3=21\n21+2=23\n23-1=22\n")
    assert not task.is_correct(q23, "7*3=21\n21+2=23\nthe answer is 23\n")
    assert not task.is_correct(q23, "")
    assert not task.is_correct(q23, "\n  \n")


def test_split_steps_drops_blank_lines_and_outer_spaces(task):
    assert task.split_steps("7*3=21  \n\n  21+2=23\n\n") == ["7*3=21", "21+2=23"]
    assert task.split_steps("") == []


def test_extract_answer_is_the_result_of_the_last_step(task):
    assert task.extract_answer("7*3=21\n21+2=23\n") == "23"
    assert task.extract_answer("7*3=21\nthen I am stuck\n") == "21"
    assert task.extract_answer("no steps here") is None
    assert task.extract_answer("") is None


def test_solution_key_ignores_spacing_and_commutative_order(task):
    assert task.solution_key(["3+5=8"]) == task.solution_key(["5 + 3 = 8"])
    assert task.solution_key(["3*5=15", "15+1=16"]) == task.solution_key(["5*3=15", "1+15=16"])
    assert task.solution_key(["8-3=5"]) != task.solution_key(["3-8=5"])
    assert task.solution_key(["a", "b"]) == "a|b"


# ---------------------------------------------------------------- registry


def test_the_registry_builds_countdown_by_name():
    assert TASKS.resolve("countdown") is CountdownTask
    task = make_task("countdown", seed=3, train_per_level=2, test_per_level=1, levels=(2, 3))
    assert task.describe()["seed"] == 3 and len(task.queries("train")) == 4
    with pytest.raises(ValueError, match="known tasks: .*countdown"):
        make_task("countdwn")


def test_impossible_sizes_fail_with_a_helpful_message():
    with pytest.raises(ValueError, match="level 2 has only"):
        CountdownTask(levels=(2,), train_per_level=500).queries("train")
