"""docs/metrics.md defines every key a round's metrics.json gets: a countdown round and a
search-agent (multihop) round go through `round_metrics` on hand-made frames of real task text,
and each key, with its level or number written as the doc writes it, must have its table row."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from selftrain.config import load_config
from selftrain.loop.round_metrics import RoundFrames, round_metrics
from selftrain.models.tiny_model import build_char_tokenizer
from selftrain.tasks import make_task

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("finetune", "generate", "difficulty", "critique", "refine", "filter", "evaluate")
DRIVER_KEYS = {"skipped_prompts"}  # written by the driver beside round_metrics' keys


def documented_keys() -> set[str]:
    """The backticked names in the first cell of every table row of docs/metrics.md."""
    keys = set()
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            keys.update(re.findall(r"`([^`]+)`", cells[1]))
    return keys


def doc_name(key: str) -> str:
    """`coverage@3` -> `coverage@L`, `pass@4` -> `pass@k`, `maj@4` -> `maj@n`, `time/x` ->
    `time/<stage>`, `format_share/steps` -> `format_share/<name>`: the key as the doc's tables
    name it."""
    if key.startswith("time/"):
        return "time/<stage>"
    if key.startswith(("format_share/", "eval_format_share/")):
        return key.split("/")[0] + "/<name>"
    name, _, suffix = key.partition("@")
    if not suffix or key == "pass@1":
        return key
    return {"pass": "pass@k", "maj": "maj@n"}.get(name, f"{name}@L")


def _frames(task, queries, tests, n: int) -> RoundFrames:
    """Per pool query: its first reference solution (correct) and a broken copy (wrong); the
    correct ones are accepted twice. n test samples per test query, alternately right."""
    samples, train = [], []
    for q in queries:
        good = task.reference_solutions(q)[0]
        for i, (text, ok) in enumerate([(good, True), (good[: len(good) // 2], False)]):
            samples.append({"sample_id": f"{q.query_id}-s{i}", "query_id": q.query_id,
                            "difficulty": q.difficulty, "prompt": q.prompt, "completion": text,
                            "answer": task.extract_answer(text), "correct": ok,
                            "origin": "sample", "num_tokens": len(text)})
        train += [{"query_id": q.query_id, "origin": "sample", "completion": good,
                   "completion_tokens": len(good)}] * 2
    evals = [{"query_id": t.query_id, "difficulty": t.difficulty, "sample_idx": j,
              "completion": f"<answer> {j % 2} </answer>", "answer": str(j % 2),
              "correct": j % 2 == 0} for t in tests for j in range(n)]
    critiques = pd.DataFrame({"sample_id": [s["sample_id"] for s in samples],
                              "critic_tokens": 0})
    return RoundFrames(pd.DataFrame(samples), pd.DataFrame(train), pd.DataFrame(evals),
                       critiques)


def _round_keys(config: str) -> set[str]:
    cfg = load_config(ROOT / "configs" / config)
    task = make_task(cfg.task.name, **cfg.task.args)
    pool, test = task.queries("train")[::10], task.queries("test")[::10]
    frames = _frames(task, pool, test, cfg.eval.num_samples)
    metrics = round_metrics(cfg, task, frames, pool, test, 2, dict.fromkeys(STAGES, 1.0),
                            build_char_tokenizer())
    assert metrics["distinct_paths"] == 1.0 and metrics["coverage"] == 1.0  # real figures
    return set(metrics)


def test_every_metrics_json_key_is_in_docs_metrics_md():
    keys = (_round_keys("countdown_rs.yaml") | _round_keys("multihop_compare.yaml")
            | _round_keys("code_compare.yaml") | DRIVER_KEYS)
    assert {"searches_per_traj", "acc@3", "maj@4", "time/refine", "embed_div",
            "eval_embed_div_passing", "effective_div", "format_share/steps",
            "eval_behaviour_classes_passing", "exec_error_share"} <= keys
    documented = documented_keys()
    missing = sorted({doc_name(k) for k in keys} - documented)
    assert not missing, f"metrics.json keys without a row in docs/metrics.md: {missing}"
