"""Unknown scores as a figure: `unknown_score_share` (the round's samples) and
`eval_unknown_score_share` (the test split) recomputed from hand-made rows, written by a graded
round's metrics, defined in docs/metrics.md and shown in report.md's per-round table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from selftrain.config import load_config
from selftrain.loop.round_metrics import RoundFrames, round_metrics
from selftrain.metrics.outcome import unknown_score_shares
from selftrain.models.tiny_model import build_char_tokenizer
from selftrain.report import write_report
from selftrain.tasks import make_task
from tests.test_report import fake_metrics, header, make_run, table_row

ROOT = Path(__file__).resolve().parents[1]
NAN = float("nan")


def test_the_shares_count_null_scores_and_a_missing_column_as_unknown():
    samples = pd.DataFrame({"score": [0.5, None, 1.0, NAN, 0.0]})  # 2 of 5 unknown
    evals = pd.DataFrame({"completion": ["a", "b"]})  # no score column: no score was known
    assert unknown_score_shares(samples, evals) == {"unknown_score_share": 0.4,
                                                    "eval_unknown_score_share": 1.0}
    known = pd.DataFrame({"score": [0.0, 0.25]})
    assert unknown_score_shares(known, known.iloc[:0]) == {"unknown_score_share": 0.0,
                                                           "eval_unknown_score_share": 0.0}


def _frames(task, pool, tests) -> RoundFrames:
    """Per pool query: a right line (score 1.0) and one the scorer could not grade (None); per
    test query 4 samples, the last unknown: 1/2 and 1/4 of the rows unknown."""
    samples, train = [], []
    for q in pool:
        line = task.reference_solutions(q, k=1)[0]
        for i, score in enumerate([1.0, None]):
            samples.append({"sample_id": f"{q.query_id}-s{i}", "query_id": q.query_id,
                            "difficulty": q.difficulty, "prompt": q.prompt, "completion": line,
                            "answer": task.extract_answer(line), "correct": score == 1.0,
                            "origin": "sample", "num_tokens": len(line), "score": score})
        train.append({"query_id": q.query_id, "origin": "sample", "completion": line,
                      "completion_tokens": len(line)})
    evals = [{"query_id": t.query_id, "difficulty": t.difficulty, "sample_idx": j,
              "completion": task.reference_solutions(t, k=1)[0], "answer": "x",
              "correct": j < 3, "num_tokens": 5, "score": 1.0 if j < 3 else None}
             for t in tests for j in range(4)]
    return RoundFrames(pd.DataFrame(samples), pd.DataFrame(train), pd.DataFrame(evals), None)


def test_a_graded_round_writes_the_shares():
    cfg = load_config(ROOT / "configs" / "lexicon_lines_rs.yaml", [
        "eval.num_samples=4", "eval.pass_k=[1]", "metrics.disabled=[eval_embed_div,embed_div]"])
    task = make_task(cfg.task.name, **cfg.task.args)
    pool, test = task.queries("train")[:6], task.queries("test")[:5]
    metrics = round_metrics(cfg, task, _frames(task, pool, test), pool, test, 2, {},
                            build_char_tokenizer())
    assert metrics["unknown_score_share"] == 0.5
    assert metrics["eval_unknown_score_share"] == 0.25
    assert metrics["pass@1"] == 0.75  # an unknown score fails


def test_a_countdown_round_has_no_unknown_score_share():
    from tests.test_metrics_doc import _round_keys

    keys = _round_keys("countdown_rs.yaml")
    assert "pass@1" in keys and not {"unknown_score_share", "eval_unknown_score_share"} & keys


def test_the_shares_are_defined_in_docs_metrics_md():
    rows = [line for line in (ROOT / "docs" / "metrics.md").read_text().splitlines()
            if line.startswith("| `unknown_score_share`")
            or line.startswith("| `eval_unknown_score_share`")]
    assert len(rows) == 2


def test_report_table_shows_the_shares_only_for_graded_runs(tmp_path):
    for seed, share in [(0, 0.1), (1, 0.3)]:
        make_run(tmp_path, "graded", "rs", seed, {
            0: {**fake_metrics("rs", seed, 0), "score_mean": 0.5, "unknown_score_share": share,
                "eval_unknown_score_share": share / 2}}, task="open_ended")
    make_run(tmp_path, "plain", "rs", 0, {0: fake_metrics("rs", 0, 0)})
    report = write_report([tmp_path], tmp_path / "report").read_text()
    graded = report[report.index("### Per-round table: `graded`"):]
    cols = header(graded)
    row = table_row(report, 0, "rs", "graded")
    assert row[cols.index("unknown_score_share")] == "0.200 ± 0.141"
    assert row[cols.index("eval_unknown_score_share")] == "0.100 ± 0.071"
    assert "unknown_score_share" not in header(report[report.index("### Per-round table: `plain`"):])
