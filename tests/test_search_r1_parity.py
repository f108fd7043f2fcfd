"""selftrain's search agent against Search-R1's code (PeterGriffinJin/Search-R1), case by case.

The expected values are what Search-R1 gives on the same input, read off its code:
- answers: `verl/utils/reward_score/qa_em.py` (`extract_solution`: the last
  `<answer>(.*?)</answer>` with re.DOTALL, stripped, run on prompt + response; `em_check`:
  normalised equality with any gold; `subem_check`: a normalised gold `in` the normalised
  prediction);
- questions: `scripts/data_process/nq_search.py` (strip, append "?" unless the last character
  is "?");
- observations: `search_r1/llm_agent/generation.py` (`_passages2string`: per document
  f"Doc {i}(Title: {first line of contents}) {other lines}\\n", the whole stripped into
  <information>; wiki-18 contents are '"Title"\\ntext').
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from selftrain.agent import answer_matches, extract_answer, format_docs, observation_titles
from selftrain.metrics.search import answer_metrics
from selftrain.retrieval import Doc, split_contents
from selftrain.tasks.searchqa import SEARCH_R1_TEMPLATE, SearchQATask, prepare_question
from selftrain.types import Query

# ---------------------------------------------------------------- which answer counts


@pytest.mark.parametrize("response, answer", [
    ("<answer> Paris </answer>", "Paris"),
    # two answers in one response: the last one counts
    ("<answer> Paris </answer> wait, no. <answer> Lyon </answer>", "Lyon"),
    ("<search> q </search>\n<information>Doc 1(Title: \"x\") y</information>\n"
     "<answer>Lyon</answer>", "Lyon"),
    ("<answer>\n  New York\n</answer>", "New York"),             # DOTALL, stripped
    ("<answer></answer>", ""),                                   # empty, not None
    ("<answer> Paris", None),                                    # never closed
    ("The answer is Paris.", None),
    # the first <answer> runs to the first </answer>, whatever lies between
    ("<answer> a <search> b </search> <answer> c </answer>", "a <search> b </search> <answer> c"),
])
def test_the_last_answer_counts(response, answer):
    assert extract_answer(response) == answer


def test_search_r1_reads_the_prompt_too():
    """Search-R1 scores prompt + response. Its prompt holds two matches, so with an answer in
    the response it reads the response's last one (as selftrain does); without one it reads
    the prompt's example, "Beijing", where selftrain reads no answer (never correct)."""
    prompt = SEARCH_R1_TEMPLATE.format(question="who wrote hamlet?")
    assert extract_answer(prompt) == "Beijing"
    assert extract_answer(prompt + "<answer> Shakespeare </answer>") == "Shakespeare"
    assert extract_answer("<search> hamlet </search>") is None


# ---------------------------------------------------------------- em and subem


@pytest.mark.parametrize("prediction, golds, em, subem", [
    ("The Beatles", ["Beatles"], True, True),                  # articles dropped
    ("beatles!", ["The Beatles"], True, True),                 # punctuation dropped
    ("Paris, France", ["paris"], False, True),                 # gold inside the prediction
    ("Paris", ["Paris, France"], False, False),                # not the other way round
    ("Parisian", ["Paris"], False, True),                      # substring, not whole words
    ("Lyon", ["Paris", "lyon."], True, True),                  # any gold answer
    ("U.S.A.", "usa", True, True),                             # one gold as a string
    ("an apple a day", ["the apple day"], True, True),
    ("1,000 men", ["1000"], False, True),
    ("", ["the"], True, True),                                 # both normalise to ""
    (None, ["Paris"], False, False),                           # no answer scores 0
])
def test_em_and_subem(prediction, golds, em, subem):
    assert answer_matches(prediction, golds, "em") is em
    assert answer_matches(prediction, golds, "subem") is subem


def test_answer_metrics_average_per_query_as_pass_at_1():
    test = [Query("q1", 1, "Q: a?\n", {"golden_answers": ["Paris"]}),
            Query("q2", 2, "Q: b?\n", {"golden_answers": ["Lyon", "Lyons"]})]
    evals = pd.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "completion": [
        "<answer> Paris </answer>",              # em and subem
        "<answer> Paris, France </answer>",      # subem only
        "<answer> Nice </answer>",               # neither
        "<search> x </search>"]})                # no answer: neither
    assert answer_metrics(evals, test) == {"em": (0.5 + 0.0) / 2, "subem": (1.0 + 0.0) / 2}
    assert answer_metrics(evals.iloc[:0], test) == {"em": None, "subem": None}
    with pytest.raises(ValueError, match="not in the test split"):
        answer_metrics(evals, test[:1])


# ---------------------------------------------------------------- questions


@pytest.mark.parametrize("raw, prepared", [
    ("who wrote hamlet", "who wrote hamlet?"),
    ("  who wrote hamlet \n", "who wrote hamlet?"),
    ("who wrote hamlet?", "who wrote hamlet?"),
    ("who wrote hamlet ?", "who wrote hamlet ?"),
    ("the author of hamlet.", "the author of hamlet.?"),       # any other last character
])
def test_question_preprocessing(raw, prepared):
    assert prepare_question(raw) == prepared
    assert prepare_question(raw, question_mark=False) == raw.strip()


def test_searchqa_prompts_end_with_the_prepared_question(tmp_path):
    rows = [{"id": "1", "question": "who founded kelvar", "golden_answers": ["Mira Tov"]},
            {"id": "2", "question": "where was zorvan keld born?", "golden_answers": ["Lumo"]}]
    path = tmp_path / "nq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = SearchQATask(train=str(path), test=str(path), cache_dir=str(tmp_path / "hf"))
    prompts = [q.prompt for q in task.queries("test")]
    assert prompts == [SEARCH_R1_TEMPLATE.format(question="who founded kelvar?"),
                       SEARCH_R1_TEMPLATE.format(question="where was zorvan keld born?")]
    assert prompts[0].endswith("Question: who founded kelvar?\n")
    kept = SearchQATask(train=str(path), test=str(path), question_mark=False,
                        cache_dir=str(tmp_path / "hf"))
    assert kept.queries("test")[0].data["question"] == "who founded kelvar"


# ---------------------------------------------------------------- observations


def test_observations_render_documents_as_search_r1_does():
    contents = ['"Lumo"\nLumo is a city.', '"Kelvar (company)"\nKelvar makes tea.\nIt is old.']
    docs = [Doc(str(i), *split_contents(c)) for i, c in enumerate(contents)]
    assert format_docs(docs) == ('Doc 1(Title: "Lumo") Lumo is a city.\n'
                                 'Doc 2(Title: "Kelvar (company)") Kelvar makes tea.\nIt is old.')
    # a corpus of {"id", "title", "text"} reads the same: the title is written in quotes
    assert format_docs([Doc("d1", "Lumo", "Lumo is a city.")]).startswith('Doc 1(Title: "Lumo") ')
    assert format_docs([]) == ""
    assert observation_titles("\n<information>" + format_docs(docs) + "</information>\n") == [
        "Lumo", "Kelvar (company)"]
