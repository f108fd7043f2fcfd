"""configs/nq_search_cpu.yaml end to end: the searchqa task on the committed NQ-format fixture,
against a real `selftrain serve-retriever` on loopback and against local BM25, with the
embedded multihop base model as the policy: the rs arm, and the critique arm with each search
critic (`search-grounded`, and `search-judge` asking a loopback OpenAI-compatible server that
stands in for `vllm serve`). Round 0 each: generate, critique, refine, filter, evaluate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, assert_same_rounds
from fake_openai import MODEL, serving

from critics.search_turns import read_turns
from selftrain.config import ConfigError, load_config
from selftrain.loop.driver import run_arm
from selftrain.tasks import make_task

CONFIG = REPO / "configs" / "nq_search_cpu.yaml"
DATA = REPO / "tests" / "data" / "nq_search"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_fixture_asks_about_the_base_models_world(tmp_path):
    """Rows are questions of the multihop task the base model comes from (pool rows in train,
    test rows in test, so none is among its demonstrations), and the corpus is its world."""
    spec = load_config(CONFIG).task.args["base_model_task"]
    world = make_task(spec["name"], **spec["args"], cache_dir=str(tmp_path))
    assert (DATA / "corpus.jsonl").read_bytes() == world.corpus_path().read_bytes()
    for split in ("train", "test"):
        by_id = {q.query_id: q for q in world.queries(split)}
        for row in read_jsonl(DATA / f"{split}.jsonl"):
            q = by_id[row["id"]]
            assert row["question"] + "?" == q.data["question"] and not row["question"].endswith("?")
            assert row["golden_answers"] == q.data["golden_answers"]


def test_searchqa_takes_the_base_model_of_base_model_task(tmp_path):
    args = load_config(CONFIG).task.args
    qa = make_task("searchqa", **{**args, "train": str(DATA / "train.jsonl"),
                                  "test": str(DATA / "test.jsonl")})
    spec = args["base_model_task"]
    world = make_task(spec["name"], **spec["args"])
    assert qa.describe() == world.describe()
    assert qa.demonstrations([1], 1, 0, 3) == world.demonstrations([1], 1, 0, 3)
    bare = make_task("searchqa", train=str(DATA / "train.jsonl"), test=str(DATA / "test.jsonl"))
    with pytest.raises(ConfigError, match="no embedded base model: set model.path"):
        bare.describe()


@pytest.fixture(scope="module")
def retriever_url(tmp_path_factory):
    """`selftrain serve-retriever` over the fixture corpus, in its own process, on a free port."""
    cache = tmp_path_factory.mktemp("index")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selftrain.cli", "serve-retriever", str(DATA / "corpus.jsonl"),
         "--port", "0", "--cache-dir", str(cache)],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # the server prints where it listens once it does
            if line.startswith("retriever serving on "):
                yield line.split()[-1]
                break
        else:
            pytest.fail(f"serve-retriever exited with {proc.wait()} before serving")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_cpu_config(root: Path, model_cache: Path, retriever: dict, arm: str = "rs",
                   *extra: str) -> tuple[dict, Path]:
    cfg = load_config(CONFIG, [
        f"run_root={root}", f"model.cache_dir={model_cache}",
        f"task.args.train={DATA / 'train.jsonl'}", f"task.args.test={DATA / 'test.jsonl'}",
        f"task.args.retriever={json.dumps(retriever)}", "task.args.max_train=6",
        "task.args.max_test=4", "rounds=0", "arms={}", f"arm.name={arm}",
        "model.tiny.sft_steps=120", "model.tiny.sft_queries_per_level={}",
        "rollout.num_samples=2", "eval.num_samples=2", "eval.pass_k=[1,2]",
        "metrics.disabled=[embed_div,self_bleu]", *extra,
    ])
    history = run_arm(cfg, arm)
    return history, root / cfg.experiment / arm / "seed0"


@pytest.fixture(scope="module")
def http_and_bm25_runs(tmp_path_factory, ray_cluster, model_cache, retriever_url):
    tmp = tmp_path_factory.mktemp("nq_search")
    http = run_cpu_config(tmp / "http", model_cache, {"kind": "http", "url": retriever_url})
    bm25 = run_cpu_config(tmp / "bm25", model_cache, bm25_spec(tmp))
    return http, bm25


def bm25_spec(tmp: Path) -> dict:
    return {"kind": "bm25", "corpus": str(DATA / "corpus.jsonl"), "cache_dir": str(tmp / "index")}


def test_one_round_against_serve_retriever(http_and_bm25_runs):
    (history, run), _ = http_and_bm25_runs
    samples = pd.read_parquet(run / "round_0" / "samples.parquet")
    questions = {f"train-{r['id']}": r["question"] for r in read_jsonl(DATA / "train.jsonl")}
    for row in samples.itertuples():  # Search-R1's preprocessing: the "?" is appended
        assert row.prompt == f"Q: {questions[row.query_id]}?\n"
    observations = [c[s:e] for c, spans in zip(samples["completion"], samples["loss_mask"])
                    if spans is not None for s, e in spans]
    found = [o for o in observations if o.startswith("\n<information>Doc")]
    assert found and all(o.startswith('\n<information>Doc 1(Title: "') for o in found)
    assert all(o in found or o.startswith("\nMy previous action is invalid") or
               o == "\n<information></information>\n" for o in observations)  # or no hits
    metrics = history[0]
    assert metrics["searches_per_traj"] is None or metrics["searches_per_traj"] > 0
    # correct is subEM (match: subem), so pass@1 is subem; em can only be lower
    assert metrics["pass@1"] == pytest.approx(metrics["subem"])
    assert metrics["em"] <= metrics["subem"]


def test_the_served_and_the_local_bm25_give_the_same_round(http_and_bm25_runs):
    (_, http), (_, bm25) = http_and_bm25_runs
    assert_same_rounds(http, bm25, [0], ["samples.parquet", "train.parquet", "eval.parquet"])


# ---------------------------------------------------------------- the critique arm


_TURN_LINE = re.compile(r"^(\d+)\. (search|answer|invalid)(.*)$", re.M)


def judge_turn_lines(prompt: str) -> str:
    """The served model's verdicts on search-judge's turn lines: a search is correct when it
    shows a document in full (one no earlier turn retrieved), an answer always, an invalid
    action never."""
    out = []
    for m in _TURN_LINE.finditer(prompt):
        ok = m[2] == "answer" or (m[2] == "search" and '": ' in m[3])
        out.append(f"Step {m[1]}: {'correct — ok' if ok else 'incorrect — nothing new'}")
    return "\n".join(out)


def expected_judge_verdicts(steps) -> list[bool]:
    return [t.kind == "answer" or (t.kind == "search" and any(t.new)) for t in read_turns(steps)]


@pytest.fixture(scope="module")
def judge_server():
    with serving(judge_turn_lines) as server:
        yield server


CRITICS = {
    "grounded": ["critic.name=search-grounded"],
    "judge": ["critic.name=search-judge"],  # critic.args point at judge_server
}


@pytest.fixture(scope="module")
def critique_runs(tmp_path_factory, ray_cluster, model_cache, retriever_url, judge_server):
    """Round 0 of the critique arm, one refinement attempt, with each critic against each
    retriever (the tiny policy of these runs solves none of the pool, so the filter keeps no
    row and a round 1 would finetune on nothing)."""
    tmp = tmp_path_factory.mktemp("nq_search_critique")
    judge_args = {"base": "openai", "base_args": {"base_url": judge_server.base_url,
                                                  "model": MODEL}}
    runs = {}
    for critic, overrides in CRITICS.items():
        if critic == "judge":
            overrides = [*overrides, f"critic.args={json.dumps(judge_args)}"]
        for kind, spec in [("http", {"kind": "http", "url": retriever_url}),
                           ("bm25", bm25_spec(tmp))]:
            runs[critic, kind] = run_cpu_config(tmp / critic / kind, model_cache, spec,
                                                "critique", "refine.attempts=1", *overrides)[1]
    return runs


def read_round(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rd = run / "round_0"
    return (pd.read_parquet(rd / "samples.parquet"), pd.read_parquet(rd / "critiques.parquet"),
            pd.read_parquet(rd / "train.parquet"))


@pytest.mark.parametrize("critic", list(CRITICS))
def test_the_critique_arm_runs_with_each_search_critic(critique_runs, critic):
    """Every sample and refinement is critiqued, one verdict per turn; failed samples are
    refined from their last good turn; a training row would have to be correct and pass the
    critic (this policy gets none correct, so there are none)."""
    samples, critiques, train = read_round(critique_runs[critic, "http"])
    by_id = critiques.set_index("sample_id")
    assert set(by_id.index) == set(samples["sample_id"])
    assert set(by_id["critic"]) == {"search-grounded" if critic == "grounded"
                                    else "search-judge(openai)"}
    for row in samples.itertuples():
        crit = by_id.loc[row.sample_id]
        assert len(crit["step_ok"]) == len(row.steps) and not any(crit["step_unknown"])
    flagged = [c for c in critiques.itertuples() if c.first_error >= 0]
    assert flagged, "the tiny policy should make a mistake a critic sees"
    refinements = samples[samples["origin"] == "refine"]
    assert len(refinements) > 0
    parents = samples.set_index("sample_id")
    for row in refinements.itertuples():  # resume: the turns before the first error are kept
        parent_steps = list(parents.loc[row.parent_id]["steps"])
        keep = by_id.loc[row.parent_id]["first_error"]
        keep = len(parent_steps) if keep < 0 else keep  # all passed: it stopped short
        assert list(row.steps[:keep]) == parent_steps[:keep]
    kept = {s for s, ok in zip(samples["sample_id"], samples["correct"])
            if ok and by_id.loc[s]["first_error"] == -1}
    assert set(train["sample_id"]) <= kept


def test_search_judge_verdicts_are_the_served_models(critique_runs, judge_server):
    samples, critiques, _ = read_round(critique_runs["judge", "http"])
    by_id = critiques.set_index("sample_id")
    for row in samples.itertuples():
        assert list(by_id.loc[row.sample_id]["step_ok"]) == expected_judge_verdicts(row.steps)
    prompts = [body["messages"][-1]["content"] for _, body, _ in judge_server.seen]
    questions = {f"train-{r['id']}": r["question"] + "?" for r in read_jsonl(DATA / "train.jsonl")}
    for qid in set(samples["query_id"]):
        assert any(f"question:\n{questions[qid]}\n" in p for p in prompts)


@pytest.mark.parametrize("critic", list(CRITICS))
def test_the_critique_arm_gives_the_same_round_on_both_retrievers(critique_runs, critic):
    assert_same_rounds(critique_runs[critic, "http"], critique_runs[critic, "bm25"], [0],
                       ["samples.parquet", "critiques.parquet", "train.parquet", "eval.parquet"])
