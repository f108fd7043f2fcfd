"""The step critics for open-domain search (`search-grounded`, `search-judge`) on the NQ-format
fixture: trajectories written by hand, their observations retrieved for real (BM25 over the
fixture corpus, `agent.replay`), judged by the heuristic, by a served model on a loopback
OpenAI-compatible server, and by an in-process tiny LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import MODEL, serving

from critics import CriticLoadError, CritiqueRequest, build_critic, checked
from critics.search_judge import SEARCH_TEMPLATE
from critics.search_turns import ShownDoc, read_turns
from selftrain import agent
from selftrain.config import TinyModelConfig, load_config
from selftrain.loop.checks import preflight
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.retrieval import BM25Retriever
from selftrain.tasks import make_task

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "nq_search"
QUESTION = "mayor of birthplace of Harnbru Trald?"
"""A test row of the fixture: Harnbru Trald was born in Brurben, whose mayor is Krultim Trild."""

S = "<search> {} </search>"
A = "<answer> {} </answer>"
TRAJECTORIES = {  # name: (policy turns, first_error of search-grounded)
    "solved": ([S.format("Harnbru Trald"), S.format("Brurben"), A.format("Krultim Trild")], -1),
    "hallucinated": ([S.format("Harnbru Trald"), A.format("Tupa Skom")], 1),
    "repeated search": ([S.format("Harnbru Trald"), S.format("Harnbru Trald"),
                         S.format("Brurben"), A.format("Krultim Trild")], 1),
    "no hits": ([S.format("xqzzy"), A.format("Krultim Trild")], 0),
    "invalid first": (["I think it is Pebe", A.format("Pebe")], 0),
    "normalised answer": ([S.format("Harnbru Trald"), S.format("Brurben"),
                           A.format("the krultim TRILD.")], -1),
    "part of a word": ([S.format("Harnbru Trald"), S.format("Brurben"), A.format("Krultim Tri")], 2),
    "grounded but wrong": ([S.format("Harnbru Trald"), A.format("Pebe")], -1),
}


@pytest.fixture(scope="module")
def query():
    task = make_task("searchqa", train=str(DATA / "train.jsonl"), test=str(DATA / "test.jsonl"))
    [q] = [q for q in task.queries("test") if q.data["question"] == QUESTION]
    return q


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return BM25Retriever(DATA / "corpus.jsonl", cache_dir=tmp_path_factory.mktemp("index"))


def requests(query, retriever, names: list[str]) -> list[CritiqueRequest]:
    """The named trajectories with real observations (top 2 of BM25 over the fixture corpus)."""
    trajs = agent.replay([query.prompt] * len(names), [TRAJECTORIES[n][0] for n in names],
                         retriever, topk=2)
    return [CritiqueRequest(sample_id=name, query=query, steps=t.steps, completion=t.completion)
            for name, t in zip(names, trajs)]


# ---------------------------------------------------------------- reading trajectories


def test_turns_show_the_documents_the_retriever_returned_new_or_seen(query, retriever):
    [req] = requests(query, retriever, ["repeated search"])
    turns = read_turns(req.steps)
    harnbru = ShownDoc("Harnbru Trald", "Harnbru Trald was born in Brurben and works for Pebe.")
    brurben = ShownDoc("Brurben", "Brurben is a city; its mayor is Krultim Trild.")
    assert [(t.kind, t.content) for t in turns] == [
        ("search", "Harnbru Trald"), ("search", "Harnbru Trald"), ("search", "Brurben"),
        ("answer", "Krultim Trild")]
    assert [t.docs for t in turns] == [[harnbru], [harnbru], [brurben, harnbru], []]
    assert [t.new for t in turns] == [[True], [False], [True, False], []]
    assert turns[3].seen_before == [harnbru, brurben]


# ---------------------------------------------------------------- search-grounded


@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_search_grounded_flags_the_first_ungrounded_turn(query, retriever, name):
    [req] = requests(query, retriever, [name])
    [crit] = checked(build_critic("search-grounded", None, {}, None), [req])
    assert crit.first_error == TRAJECTORIES[name][1]
    assert crit.critic == "search-grounded"
    assert all(v.ok is not None and v.score == float(v.ok) for v in crit.verdicts)


def test_search_grounded_says_why(query, retriever):
    names = ["hallucinated", "repeated search", "no hits", "invalid first"]
    critic = build_critic("search-grounded", None, {}, None)
    feedback = {n: c.feedback for n, c in zip(names, checked(critic, requests(query, retriever, names)))}
    assert feedback["hallucinated"] == ("Step 2: answer 'Tupa Skom' appears in no retrieved "
                                        "document; search for it, or answer with what the "
                                        "documents say")
    assert "Step 2: search 'Harnbru Trald' retrieved only documents already retrieved" in \
        feedback["repeated search"]
    assert feedback["no hits"].startswith("Step 1: search 'xqzzy' returned no document")
    assert feedback["invalid first"].startswith("Step 1: invalid action")
    assert "Step 2: answer 'Pebe' appears in no retrieved document" in feedback["invalid first"]


# ---------------------------------------------------------------- search-judge, served


def canned(prompt: str) -> str:
    """The served model's answers: fixed verdicts, picked by what the prompt shows."""
    if "Tupa Skom" in prompt:
        return "Step 1: correct — found Harnbru Trald\nStep 2: incorrect — not in the documents"
    if "xqzzy" in prompt:
        return "I cannot judge this."
    return "**Step 1:** correct — ok\nStep 3: correct — ok"  # step 2 left out


def judge_critic(server, **args):
    return build_critic("search-judge", None, {
        "base": "openai", "base_args": {"base_url": server.base_url, "model": MODEL, **args}},
        None)


def test_search_judge_asks_the_served_model_with_question_queries_and_documents(query, retriever):
    with serving(canned) as server:
        critic = judge_critic(server, system="You judge search agents.")
        reqs = requests(query, retriever, ["hallucinated", "no hits", "repeated search"])
        hallucinated, no_hits, repeated = checked(critic, reqs)
        prompts = {body["messages"][-1]["content"] for _, body, _ in server.seen}
    assert hallucinated.critic == "search-judge(openai)"
    assert [v.ok for v in hallucinated.verdicts] == [True, False]
    assert hallucinated.first_error == 1 and hallucinated.verdicts[1].feedback == "not in the documents"
    assert [v.ok for v in no_hits.verdicts] == [None, None]  # unreadable: unknown, no crash
    assert no_hits.extra["unknown_steps"] == 2 and no_hits.raw_text == "I cannot judge this."
    assert [v.ok for v in repeated.verdicts] == [True, None, True, None]
    [prompt] = [p for p in prompts if "Tupa Skom" not in p and "xqzzy" not in p]
    assert prompt == SEARCH_TEMPLATE.format(prompt=QUESTION, num_steps=4, steps=(
        '1. search: Harnbru Trald -> [1] "Harnbru Trald": Harnbru Trald was born in Brurben '
        'and works for Pebe.\n'
        '2. search: Harnbru Trald -> [1] "Harnbru Trald" (already retrieved)\n'
        '3. search: Brurben -> [1] "Brurben": Brurben is a city; its mayor is Krultim Trild. '
        '[2] "Harnbru Trald" (already retrieved)\n'
        '4. answer: Krultim Trild\n'))
    assert "Beijing" not in prompt  # the question alone, not the policy's instructions
    assert any("1. search: xqzzy -> no documents\n2. answer: Krultim Trild" in p for p in prompts)


def test_search_judge_cuts_long_documents_and_takes_a_template(query, retriever):
    with serving(canned) as server:
        critic = build_critic("search-judge", None, {
            "max_doc_chars": 12, "base": "openai",
            "base_args": {"base_url": server.base_url, "model": MODEL, "api": "completions",
                          "template": "Q={prompt} N={num_steps}\n{steps}"}}, None)
        checked(critic, requests(query, retriever, ["solved"]))
        [(_, body, _)] = server.seen
    assert body["prompt"] == (f"Q={QUESTION} N=3\n"
                              '1. search: Harnbru Trald -> [1] "Harnbru Trald": Harnbru Tral\n'
                              '2. search: Brurben -> [1] "Brurben": Brurben is a [2] "Harnbru '
                              'Trald" (already retrieved)\n3. answer: Krultim Trild\n')


def test_search_judge_preflight_checks_its_served_base(tmp_path):
    def cfg(base_url: str):
        return load_config(REPO / "configs" / "nq_search_cpu.yaml", [
            f"run_root={tmp_path}", f"task.args.train={DATA / 'train.jsonl'}",
            f"task.args.test={DATA / 'test.jsonl'}", "arm.name=critique",
            "critic.name=search-judge", "critic.args=" + json.dumps(
                {"base": "openai", "base_args": {"base_url": base_url, "model": MODEL}})])

    with serving(canned) as server:
        preflight(cfg(server.base_url), "run")
        down = server.base_url
    with pytest.raises(CriticLoadError, match="openai critic: cannot reach"):
        preflight(cfg(down), "run")


def test_search_judge_needs_a_generative_base():
    with pytest.raises(CriticLoadError, match="search-judge critic: its base 'search-grounded'"):
        build_critic("search-judge", None, {"base": "search-grounded"}, None)


def test_the_gpu_configs_critic_asks_its_server_as_configured(query, retriever):
    """configs/nq_search_compare.yaml's critic, pointed at the loopback server instead of
    `vllm serve`: its settings reach the request."""
    args = load_config(REPO / "configs" / "nq_search_compare.yaml").critic.args
    with serving(canned) as server:
        critic = build_critic("search-judge", None, {
            **args, "base_args": {**args["base_args"], "base_url": server.base_url}}, None)
        [crit] = checked(critic, requests(query, retriever, ["hallucinated"]))
        [(path, body, _)] = server.seen
    assert crit.critic == "search-judge(openai)" and crit.first_error == 1
    assert path == "/v1/chat/completions" and body["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert body["messages"][0]["role"] == "system" and body["max_tokens"] == 256
    assert f"Its question:\n{QUESTION}\n" in body["messages"][1]["content"]


def test_search_judge_refuses_a_document_cut_below_one_character():
    with pytest.raises(CriticLoadError, match="max_doc_chars must be >= 1 or null, got 0"):
        build_critic("search-judge", None, {"max_doc_chars": 0}, None)


# ---------------------------------------------------------------- search-judge, in process


def test_search_judge_on_an_in_process_lm_gives_one_verdict_per_turn(query, retriever, tmp_path):
    """An untrained tiny LM: its text is noise, so every verdict is unknown, one per turn."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1,
                                             intermediate_size=64, max_position_embeddings=2048),
                             len(tokenizer), tokenizer)
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    portable_tokenizer_config(tmp_path / "lm")
    critic = build_critic("search-judge", None, {
        "base": "lm", "max_doc_chars": 40,
        "base_args": {"model_path": str(tmp_path / "lm"), "max_new_tokens": 8}}, None)
    crits = checked(critic, requests(query, retriever, ["solved", "hallucinated"]))
    assert [len(c.verdicts) for c in crits] == [3, 2]
    for crit in crits:
        assert crit.critic == "search-judge(lm)" and 0 < crit.tokens <= 8
        assert all(v.ok is None for v in crit.verdicts)  # 8 characters hold no verdict line
        assert crit.extra["unknown_steps"] == len(crit.verdicts)

