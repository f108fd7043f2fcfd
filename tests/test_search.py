"""Search-agent pieces: answer checking, actions, the episode driver, retrievers, the multihop
world and its oracle critic, the searchqa loader."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from critics.multihop_oracle import MultihopOracle
from critics.protocol import CritiqueRequest
from selftrain.agent import (
    INVALID_OBSERVATION,
    OBS_OPEN,
    Action,
    exact_match,
    normalize_squad,
    parse_action,
    replay,
    run_episodes,
    split_steps,
    split_turns,
)
from selftrain.metrics.search import search_metrics
from selftrain.retrieval import (
    BM25Retriever,
    CorpusError,
    HTTPRetriever,
    RetrieverError,
    RetrieverUnavailable,
    make_retriever,
    make_server,
)
from selftrain.tasks import make_task
from selftrain.tasks.multihop import MultihopTask
from selftrain.tasks.searchqa import SearchQATask

# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("prediction, gold, same", [
    ("The Beatles", "beatles", True),                 # leading article
    ("a dog", "the dog", True),                       # articles are words, any of a/an/the
    ("An Apple", "apple", True),
    ("theater", "ater", False),                       # "the" inside a word stays
    ("The Theater", "theater", True),
    ("  New   York\tCity ", "new york city", True),  # whitespace collapses
    ("U.S.A.", "usa", True),                          # ASCII punctuation goes
    ("rock 'n' roll", "rock n roll", True),
    ("Jean-Paul", "jeanpaul", True),                  # hyphen is ASCII punctuation
    ("Jean–Paul", "jeanpaul", False),                 # en dash is not (as in SQuAD v1.1)
    ("1,000", "1000", True),                          # numbers: only punctuation is dropped
    ("3.5", "35", True),
    ("1 000", "1000", False),
    ("twelve", "12", False),
    ("PARIS!", "paris", True),
    ("", "the", True),                                # both normalise to ""
])
def test_squad_exact_match(prediction, gold, same):
    assert exact_match(prediction, [gold]) is same
    assert (normalize_squad(prediction) == normalize_squad(gold)) is same


def test_exact_match_takes_any_gold_and_no_answer_is_wrong():
    assert exact_match("Lumo", ["Kelvar", "lumo."])
    assert exact_match("lumo", "Lumo")
    assert not exact_match(None, ["Lumo"])
    assert normalize_squad("  The  Cat, the HAT. ") == "cat hat"


# ---------------------------------------------------------------- actions


@pytest.mark.parametrize("text, action", [
    ("<search>Zorvan Keld</search>", Action("search", "Zorvan Keld")),
    ("thinking first. <search> Zorvan Keld </search>", Action("search", "Zorvan Keld")),
    ("<answer>Lumo</answer>", Action("answer", "Lumo")),
    ("<search>Kelvar</search> <answer>Lumo</answer>", Action("search", "Kelvar")),  # both: first
    ("<answer>Lumo</answer><search>Kelvar</search>", Action("answer", "Lumo")),
    ("<search>Zorvan Keld", Action("invalid")),                                     # no close
    ("Zorvan Keld</search>", Action("invalid")),                                    # no open
    ("<search>a <search>b</search></search>", Action("invalid")),                   # nested
    ("<answer>x <search>b</search>", Action("invalid")),                            # nested
    ("<search>Lumo</answer>", Action("invalid")),                                   # mismatched
    ("<search>  </search>", Action("invalid")),                                     # empty
    ("I think the answer is Lumo.", Action("invalid")),
    ("", Action("invalid")),
])
def test_parse_action(text, action):
    assert parse_action(text) == action


# ---------------------------------------------------------------- episode driver

CORPUS = [
    {"id": "d1", "title": "Zorvan Keld", "text": "Zorvan Keld was born in Lumo and works for Kelvar."},
    {"id": "d2", "title": "Kelvar", "text": "Kelvar is a company in Dava, founded by Mira Tov."},
    {"id": "d3", "title": "Mira Tov", "text": "Mira Tov was born in Dava and works for Kelvar."},
    {"id": "d4", "title": "Lumo", "text": "Lumo is a city; its mayor is Mira Tov."},
    {"id": "d5", "title": "Dava", "text": "Dava is a city; its mayor is Zorvan Keld."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def bm25(tmp_path) -> BM25Retriever:
    return BM25Retriever(write_jsonl(tmp_path / "corpus.jsonl", CORPUS))


class Counting:
    """Wraps a retriever and records the batch of every call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def search(self, queries, topk):
        self.calls.append(list(queries))
        return self.inner.search(queries, topk)


def scripted(script: dict[str, list[str]]):
    """A fake policy: for each context, the next scripted turn of its prompt (found by how many
    turns its completion already has). Records the batch size of every call."""
    calls: list[int] = []

    def generate(contexts: list[str]):
        calls.append(len(contexts))
        out = []
        for ctx in contexts:
            prompt = next(p for p in script if ctx.startswith(p))
            turn = len(split_turns(ctx[len(prompt):]))
            text = script[prompt][turn]
            out.append(None if text is None else (text, len(text)))
        return out

    generate.calls = calls
    return generate


def test_episodes_advance_together_and_observations_are_appended_and_masked(bm25):
    script = {
        "Q1\n": ["<search>Zorvan Keld</search>", "<search>Kelvar</search>", "<answer>Dava</answer>"],
        "Q2\n": ["<answer>Lumo</answer>"],
        "Q3\n": ["<search>Mira Tov</search> and more text", "<answer>Kelvar</answer>"],
    }
    gen, retriever = scripted(script), Counting(bm25)
    t1, t2, t3 = run_episodes(list(script), gen, retriever, max_turns=5, topk=2)
    assert gen.calls == [3, 2, 1]                       # one call per round, all live contexts
    assert retriever.calls == [["Zorvan Keld", "Mira Tov"], ["Kelvar"]]  # one batch per round

    assert [t.kind for t in t1.turns] == ["search", "search", "answer"]
    assert t1.answer == "Dava" and t1.stop_reason == "answer" and t1.num_invalid == 0
    assert t1.turns[0].doc_ids[0] == "d1" and t1.turns[1].doc_ids[0] == "d2"
    assert t1.num_tokens == sum(len(s) for s in script["Q1\n"])
    assert t1.turns[0].observation.startswith(OBS_OPEN + 'Doc 1(Title: "Zorvan Keld") Zorvan Keld')
    assert t3.turns[0].text == "<search>Mira Tov</search>"  # cut at the stop string
    assert t2.completion == "<answer>Lumo</answer>" and t2.masked_spans == []

    spans = t1.masked_spans
    assert [t1.completion[s:e] for s, e in spans] == [t.observation for t in t1.turns[:2]]
    assert all(t1.completion[s:e].startswith("\n<information>") for s, e in spans)
    learned = "".join(t1.completion[a:b] for a, b in
                      zip([0] + [e for _, e in spans], [s for s, _ in spans] + [None]))
    assert learned == "".join(script["Q1\n"])          # unmasked = exactly what the policy wrote
    for t in (t1, t2, t3):
        assert split_steps(t.completion) == t.steps     # the completion alone gives the turns


def test_invalid_actions_get_the_corrective_observation_and_use_up_turns(bm25):
    script = {"Q\n": ["I will look it up", "<search>Kelvar", "<search>Kelvar</search>",
                      "<answer>Dava</answer>"]}
    (t,) = run_episodes(["Q\n"], scripted(script), bm25, max_turns=3, topk=2)
    assert [turn.kind for turn in t.turns] == ["invalid", "invalid", "search"]
    assert t.turns[0].observation == INVALID_OBSERVATION
    assert "My previous action is invalid. If I want to search, I should put the query between " \
           "<search> and </search>." in t.completion
    assert t.num_invalid == 2 and t.stop_reason == "max_turns" and t.answer is None
    assert len(t.masked_spans) == 3
    assert [t.completion[s:e] for s, e in t.masked_spans][:2] == [INVALID_OBSERVATION] * 2
    assert split_steps(t.completion) == t.steps


def test_turn_limit_and_generate_fn_giving_up_end_episodes(bm25):
    script = {"A\n": ["<search>Lumo</search>"] * 10, "B\n": ["<search>Dava</search>", None]}
    gen = scripted(script)
    a, b = run_episodes(["A\n", "B\n"], gen, bm25, max_turns=4, topk=1)
    assert len(a.turns) == 4 and a.stop_reason == "max_turns" and a.num_searches == 4
    assert len(b.turns) == 1 and b.stop_reason == "context"
    assert gen.calls == [2, 2, 1, 1]


def test_replay_rebuilds_the_same_observations_and_resumes(bm25):
    script = {"Q\n": ["<search>Zorvan Keld</search>", "oops", "<search>Kelvar</search>",
                      "<answer>Dava</answer>"]}
    (full,) = run_episodes(["Q\n"], scripted(script), bm25, max_turns=6, topk=2)
    # Restart after the good first turn, from whole steps (observations are recomputed).
    (start,) = replay(["Q\n"], [full.steps[:1]], bm25, topk=2)
    assert start.completion == full.steps[0] and not start.done
    assert start.turns[0].replayed and start.num_tokens == 0
    again = {"Q\n": [None, "<search>Kelvar</search>", "<answer>Dava</answer>"]}
    (resumed,) = run_episodes(["Q\n"], scripted(again), bm25, max_turns=6, topk=2, starts=[start])
    assert [t.kind for t in resumed.turns] == ["search", "search", "answer"]
    assert resumed.answer == "Dava" and resumed.num_tokens == len(again["Q\n"][1] + again["Q\n"][2])
    (same,) = replay(["Q\n"], [[t.text for t in full.turns]], bm25, topk=2)
    assert same.completion == full.completion and same.done


# ---------------------------------------------------------------- retrievers


def test_bm25_index_is_cached_by_corpus_hash(tmp_path, monkeypatch):
    corpus = write_jsonl(tmp_path / "c.jsonl", CORPUS)
    first = BM25Retriever(corpus, cache_dir=tmp_path / "idx")
    assert (first.index_dir / "selftrain_index.json").is_file()
    monkeypatch.setattr(BM25Retriever, "_build", lambda self: pytest.fail("index rebuilt"))
    second = BM25Retriever(corpus, cache_dir=tmp_path / "idx")
    assert second.index_dir == first.index_dir
    assert second.search(["Kelvar"], 2) == first.search(["Kelvar"], 2)
    write_jsonl(corpus, CORPUS[:3])  # another corpus, another key: never a stale index
    monkeypatch.undo()
    assert BM25Retriever(corpus, cache_dir=tmp_path / "idx").index_dir != first.index_dir


def test_bm25_results(bm25):
    (hits, none) = bm25.search(["Mira Tov", "unrelated words"], 3)
    assert hits[0].id == "d3" and len(hits) == 3 and hits[0].score >= hits[1].score > 0
    assert none == []  # no term in common: nothing, not arbitrary zero-score documents


@pytest.mark.parametrize("line, message", [
    ("{not json", "c.jsonl:2: not a JSON object"),
    ('{"id": "x", "title": "T"}', "c.jsonl:2: a document needs 'title' and 'text'"),
    ('{"title": "T", "text": "t"}', "c.jsonl:2: the document has no 'id'"),
    ('{"id": "a", "title": "T", "text": "t"}', "c.jsonl:2: id 'a' was already used on line 1"),
])
def test_bad_corpus_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "title": "A", "text": "x"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=message):
        BM25Retriever(path)


def test_search_r1_contents_lines_are_read(tmp_path):
    path = write_jsonl(tmp_path / "wiki.jsonl", [{"id": "7", "contents": '"Lumo"\nLumo is a city.'}])
    (docs,) = BM25Retriever(path).search(["lumo"], 3)
    assert (docs[0].id, docs[0].title, docs[0].text) == ("7", "Lumo", "Lumo is a city.")


@pytest.fixture
def server(bm25):
    srv = make_server(bm25, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/retrieve"
    srv.shutdown()
    srv.server_close()


def test_http_retriever_against_served_bm25_matches_direct_search(server, bm25):
    queries = ["Zorvan Keld", "Kelvar founded", "nothing here"]
    remote = HTTPRetriever(server, timeout_s=5).search(queries, 2)
    assert remote == bm25.search(queries, 2)
    # The wire format is Search-R1's: result -> [[{document: {id, contents}, score}]]
    body = json.dumps({"queries": ["Kelvar"], "topk": 1, "return_scores": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(server, data=body), timeout=5) as resp:
        (item,) = json.loads(resp.read())["result"][0]
    assert item["document"]["id"] == "d2" and item["score"] > 0
    assert item["document"]["contents"] == '"Kelvar"\nKelvar is a company in Dava, founded by Mira Tov.'


def test_http_retriever_does_not_retry_a_bad_request(server):
    client = HTTPRetriever(server.replace("/retrieve", "/nowhere"), retries=3, backoff_s=5)
    start = time.monotonic()
    with pytest.raises(RetrieverError, match="HTTP 404"):
        client.search(["x"], 1)
    assert time.monotonic() - start < 2


def test_a_down_retriever_fails_fast_after_its_retries():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/retrieve"
    start = time.monotonic()
    with pytest.raises(RetrieverUnavailable) as err:
        HTTPRetriever(url, timeout_s=1, retries=2, backoff_s=0.05).search(["x"], 1)
    assert time.monotonic() - start < 2
    assert url in str(err.value) and "3 attempts" in str(err.value)


def test_a_silent_retriever_times_out_instead_of_hanging():
    with socket.socket() as s:  # listens (connections queue up) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/retrieve"
        start = time.monotonic()
        with pytest.raises(RetrieverUnavailable, match="2 attempts.*timed out"):
            HTTPRetriever(url, timeout_s=0.2, retries=1, backoff_s=0.01).search(["x"], 1)
        assert time.monotonic() - start < 2


def test_make_retriever(tmp_path, bm25):
    assert isinstance(make_retriever({"kind": "bm25", "corpus": str(bm25.corpus_path)}),
                      BM25Retriever)
    http = make_retriever({"kind": "http", "url": "http://127.0.0.1:9/retrieve", "retries": 0})
    assert isinstance(http, HTTPRetriever) and http.retries == 0
    with pytest.raises(ValueError, match="kind 'faiss' is unknown"):
        make_retriever({"kind": "faiss"})
    with pytest.raises(ValueError, match=r"needs \['url'\]"):
        make_retriever({"kind": "http"})
    with pytest.raises(ValueError, match=r"does not take \['topk'\]"):
        make_retriever({"kind": "http", "url": "http://x/retrieve", "topk": 3})


# ---------------------------------------------------------------- multihop


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> MultihopTask:
    return MultihopTask(cache_dir=str(tmp_path_factory.mktemp("multihop")))


def test_multihop_world_is_deterministic(world, tmp_path):
    again = MultihopTask(cache_dir=str(tmp_path))
    other = MultihopTask(seed=1, cache_dir=str(tmp_path))
    assert again.queries("train") == world.queries("train")
    assert again.queries("test") == world.queries("test")
    assert again.corpus_path().read_bytes() == world.corpus_path().read_bytes()
    assert [q.prompt for q in other.queries("train")] != [q.prompt for q in world.queries("train")]
    assert make_task("multihop", cache_dir=str(tmp_path)).describe() == world.describe()


def test_multihop_splits_are_disjoint_and_levels_are_hops(world):
    train, test = world.queries("train"), world.queries("test")
    assert len(train) == 4 * 100 and len(test) == 4 * 25
    assert not {q.prompt for q in train} & {q.prompt for q in test}
    assert len({q.query_id for q in train + test}) == len(train) + len(test)
    for q in train + test:
        assert len(q.data["chain"]) == q.difficulty == q.prompt.count(" of ")
        assert q.data["answer"] not in q.data["chain_names"]


def test_every_entity_is_found_by_its_name(world):
    entities = list(world.world.values())
    results = world.retriever().search([e.name for e in entities], world.topk)
    assert all(docs[0].id == e.id for e, docs in zip(entities, results))


def test_every_question_is_answered_by_its_gold_chain(world):
    queries = world.queries("train") + world.queries("test")
    for q, traj in zip(queries, world.gold_trajectories(queries)):
        searches = [t for t in traj.turns if t.kind == "search"]
        assert len(searches) == q.difficulty
        for turn, doc_id in zip(searches, q.data["chain"]):
            assert doc_id in turn.doc_ids                   # each hop retrieves its document
        assert q.data["answer"] in searches[-1].observation  # the last one holds the answer
        assert world.is_correct(q, traj.completion)
        assert world.extract_answer(traj.completion) == q.data["answer"]
        assert world.split_steps(traj.completion) == traj.steps


def test_multihop_demonstrations_mask_observations_and_skip_test_and_pool(world):
    demos = world.demonstrations(levels=[1, 2], per_query=1, seed=0, extra_per_level=10)
    assert len(demos) == 2 * 10
    seen_prompts = {q.prompt for q in world.queries("test") + world.queries("train")}
    for demo in demos:
        prompt, completion, spans = demo.prompt, demo.completion, demo.masked_spans
        assert prompt not in seen_prompts
        assert spans and all(completion[s:e].startswith("\n<information>") for s, e in spans)
        learned = completion
        for s, e in reversed(spans):
            learned = learned[:s] + learned[e:]
        assert "<information>" not in learned and learned.endswith("</answer>")
    (q,) = [q for q in world.queries("train") if q.difficulty == 2][:1]
    assert world.reference_solutions(q) == [world.gold_trajectories([q])[0].completion]


def test_multihop_extra_metrics_from_completions(world):
    q = next(q for q in world.queries("train") if q.difficulty == 2)
    gold = world.reference_solutions(q)[0]
    detour = "<search>zz</search>" + OBS_OPEN + "</information>\n" + gold  # one more search
    bad = "hmm" + INVALID_OBSERVATION + "<answer>x</answer>"
    samples = pd.DataFrame({"query_id": [q.query_id] * 3, "origin": ["sample"] * 3,
                            "completion": [gold, bad, detour]})
    train = pd.DataFrame({"query_id": [q.query_id] * 2, "completion": [gold, detour]})
    m = search_metrics(samples, train)
    assert m == {"searches_per_traj": 2.5, "distinct_query_sets": 2.0,
                 "invalid_action_rate": 1 / (3 + 2 + 4)}
    assert world.solution_key(world.split_steps(gold)) != world.solution_key(
        world.split_steps(detour))
    empty = pd.DataFrame({"query_id": [], "origin": [], "completion": []})
    assert set(search_metrics(empty, empty).values()) == {None}


def test_multihop_oracle_on_hand_trajectories(world):
    q = next(q for q in world.queries("train") if q.difficulty == 2)
    first, second = q.data["chain_names"]
    wrong = next(n for n in (e.name for e in world.world.values())
                 if n not in (first, second, q.data["answer"]))
    turns = {
        "gold": [f"<search>{first}</search>", f"<search>{second}</search>",
                 f"<answer>{q.data['answer']}</answer>"],
        "repeat": [f"<search>{first}</search>", f"<search>{first}</search>"],
        "wrong": [f"<search>{first}</search>", f"<answer>{wrong}</answer>"],
        "invalid": ["let me think", f"<search>{first}</search>"],
    }
    trajs = replay([q.prompt] * len(turns), list(turns.values()), world.retriever(), world.topk)
    requests = [CritiqueRequest(sample_id=name, query=q, steps=t.steps, completion=t.completion)
                for name, t in zip(turns, trajs)]
    gold, repeat, wrong_answer, invalid = MultihopOracle(task=world).critique(requests)
    assert gold.passed
    assert repeat.first_error == 1
    assert repeat.verdicts[1].feedback == (
        f"results had no new document of the chain; next needed: {second}")
    assert wrong_answer.first_error == 1 and f"next needed: {second}" in wrong_answer.feedback
    assert invalid.first_error == 0 and invalid.verdicts[1].ok


# ---------------------------------------------------------------- searchqa


def test_searchqa_loads_jsonl_and_parquet_with_custom_columns(tmp_path, bm25):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"qid": "a", "q": "Who founded Kelvar?", "answers": ["Mira Tov"], "level": "hard"},
        {"qid": "b", "q": "Where was Zorvan Keld born?", "answers": ["Lumo"], "level": "easy"},
    ])
    pd.DataFrame({"q": ["Which city has mayor Mira Tov?"], "answers": [["Lumo", "Lumo city"]]}
                 ).to_parquet(tmp_path / "test.parquet")
    task = SearchQATask(train=str(train), test=str(tmp_path / "test.parquet"),
                        corpus=str(bm25.corpus_path), question_column="q",
                        answers_column="answers", difficulty_column="level", id_column="qid",
                        prompt_template="Q: {question}\n", cache_dir=str(tmp_path / "hf"))
    tr, te = task.queries("train"), task.queries("test")
    assert [(q.query_id, q.difficulty, q.prompt) for q in tr] == [
        ("train-a", 3, "Q: Who founded Kelvar?\n"), ("train-b", 1, "Q: Where was Zorvan Keld born?\n")]
    assert te[0].query_id == "test-000000" and te[0].difficulty == 1  # no level column: 1
    assert task.is_correct(te[0], "<search>x</search>\n<answer>the lumo city</answer>")
    assert not task.is_correct(te[0], "<answer>Dava</answer>")
    assert task.env().retriever.search(["Kelvar"], 1)[0][0].id == "d2"


def test_searchqa_missing_column_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "nq.jsonl", [{"question": "q?", "answer": "x"}])
    task = SearchQATask(train=str(path), test=str(path), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"nq.jsonl: no column 'golden_answers'.*answers_column"):
        task.queries("train")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        SearchQATask(train=str(tmp_path / "missing.parquet"), test=str(path)).queries("train")
    with pytest.raises(ValueError, match="needs a retriever"):
        task.env()


def test_train_rows_with_masked_observations_read_back_for_finetune(world, tmp_path):
    """train.parquet rows as the Ray Train worker reads them (pandas: loss_mask arrives as an
    array of arrays, or None) become SFT examples with the observation spans masked."""
    from selftrain.cluster.trainer import examples_from_rows

    q = next(q for q in world.queries("train") if q.difficulty == 2)
    traj = world.gold_trajectories([q])[0]
    rows = pd.DataFrame({"prompt": [q.prompt, q.prompt],
                         "completion": [traj.completion, "<answer>x</answer>"],
                         "loss_mask": [[list(s) for s in traj.masked_spans], None]})
    rows.to_parquet(tmp_path / "train.parquet")
    back = pd.read_parquet(tmp_path / "train.parquet").to_dict("records")
    with_spans, without = examples_from_rows(back)
    assert with_spans.masked_spans == traj.masked_spans and len(traj.masked_spans) == 2
    assert without.masked_spans == []
