"""Solution formats: countdown's checker reads a nested expression as the steps it stands for,
`format_of` tells the formats apart (countdown and math), and the share figures equal a hand
computation."""

from __future__ import annotations

import json
import math

import pytest

from selftrain.metrics.formats import format_metrics
from selftrain.tasks import abilities, make_task
from selftrain.tasks.countdown import check_steps, parse_step


def as_expression(steps: list[str]) -> str:
    """"7*3=21\\n21+2=23" -> "(7*3)+2=23": each earlier result replaced by its expression."""
    made: dict[int, str] = {}
    for step in steps:
        a, op, b, r = parse_step(step)
        left = made.pop(a) if a in made else str(a)
        right = made.pop(b) if b in made else str(b)
        made[r] = f"({left}{op}{right})"
    return made[r][1:-1] + f"={r}"


@pytest.fixture(scope="module")
def countdown():
    return make_task("countdown", levels=[3, 4], test_per_level=5, train_per_level=5)


def test_a_nested_expression_is_a_correct_countdown_answer(countdown):
    for q in countdown.queries("test"):
        steps = countdown.reference_solutions(q, k=1)[0]
        expr = as_expression(countdown.split_steps(steps))
        assert countdown.is_correct(q, expr + "\n"), expr
        assert countdown.extract_answer(expr) == str(q.data["target"])
        # the two formats of one solution are one solution class
        assert countdown.solution_key([expr]) == countdown.solution_key(countdown.split_steps(steps))
        assert countdown.format_of(steps) == "steps" and countdown.format_of(expr) == "expression"
        wrong = expr.rsplit("=", 1)[0] + f"={q.data['target'] + 1}"
        assert not countdown.is_correct(q, wrong)


def test_an_expression_is_held_to_the_step_rules():
    # 4*3=12, 12-2=10 from {2, 3, 4}: ok; a number not given, or used twice: not ok
    assert check_steps([2, 3, 4], 10, ["(4*3)-2=10"])[0].ok
    bad = check_steps([2, 3, 4], 10, ["(4*4)-6=10"])[0]
    assert not bad.ok and not bad.operands_available
    inexact = check_steps([7, 2, 1], 4, ["7/2+1=4"])[0]
    assert not inexact.ok and "not an exact division" in inexact.reason


def test_format_of_names_the_formats_of_countdown_and_math(countdown):
    assert abilities(countdown).formats is countdown
    assert countdown.format_of("4*3=12\n12-2=10\n") == "steps"
    assert countdown.format_of("(4*3)-2=10") == "expression"
    assert countdown.format_of("twelve") is None and countdown.format_of("") is None


def test_math_format_is_the_marker_of_the_final_answer(tmp_path):
    data = tmp_path / "tiny.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    task = make_task("math", train=str(data), test=str(data))
    assert abilities(task).formats is task
    assert task.format_of("so x = 2, \\boxed{2}") == "boxed"
    assert task.format_of("\\boxed{3} is wrong. The answer is 2.") == "answer_is"
    assert task.format_of("48/2 = 24\n#### 24") == "gsm8k"
    assert task.format_of("no final answer here") is None


def test_format_shares_entropy_and_dominant_share_by_hand():
    def fmt(text: str) -> str | None:
        return {"s": "steps", "e": "expression"}.get(text[0])

    out = format_metrics(train=["s1", "s2", "s3", "e1"], evals=["s1", "x", "e1", "e2"],
                         format_of=fmt)
    assert out["format_share/steps"] == 0.75 and out["format_share/expression"] == 0.25
    assert out["format_share/none"] == 0.0  # seen on the test split only
    assert out["format_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert out["dominant_format_share"] == 0.75
    assert out["eval_format_share/expression"] == 0.5 and out["eval_format_share/none"] == 0.25
    assert out["eval_format_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert out["eval_dominant_format_share"] == 0.5
    empty = format_metrics(train=[], evals=["s1"], format_of=fmt)
    assert empty["format_share/steps"] is None and empty["format_entropy"] is None
    assert empty["eval_format_entropy"] == 0.0 and empty["eval_dominant_format_share"] == 1.0


def test_the_base_models_demonstrations_mix_the_formats_by_weight():
    from collections import Counter

    from selftrain.types import Query

    mixed = make_task("countdown", levels=[3, 4], formats={"steps": 0.5, "expression": 0.5})
    demos = mixed.demonstrations([3, 4], per_query=2, seed=0, extra_per_level=20)
    counts = Counter(mixed.format_of(d.completion) for d in demos)
    assert set(counts) == {"steps", "expression"} and min(counts.values()) >= len(demos) // 4
    for d in demos:  # every demonstration, in either format, is a correct solution
        numbers, target = d.prompt.split("->")
        q = Query(query_id="demo", difficulty=3, prompt=d.prompt,
                  data={"numbers": [int(n) for n in numbers.split()], "target": int(target)})
        assert mixed.is_correct(q, d.completion), d
    only = make_task("countdown", levels=[3], formats={"expression": 1.0})
    assert {only.format_of(d.completion) for d in only.demonstrations([3], 1, 0, 5)} == {"expression"}
    # the default writes step lines and keeps its cache key (no formats entry)
    assert "formats" not in make_task("countdown").describe()
    assert mixed.describe()["formats"] == {"steps": 0.5, "expression": 0.5}
    with pytest.raises(ValueError, match="formats must map some of"):
        make_task("countdown", formats={"prose": 1.0})
