"""Preference pairs of a search agent, from hand-made trajectories (replayed over a real BM25
index of four documents) and hand-made critiques: a step pair's prompt is the query + the turns
before the critic's first wrong one, its sides the repair's and the original's continuations,
and the retrieved observations inside each side are left out of the DPO log-probs exactly as
SFT leaves them out of its loss."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from critics import Critique, StepVerdict
from selftrain import agent
from selftrain.arms.pairs import build_pairs
from selftrain.arms.parts import Partition
from selftrain.config import from_dict
from selftrain.models.tiny_model import build_char_tokenizer
from selftrain.retrieval import BM25Retriever
from selftrain.runfolder.folder import write_parquet
from selftrain.runfolder.schemas import PAIR_SCHEMA, train_row
from selftrain.train.dpo import encode_pairs
from selftrain.train.rank_trainer import examples_from_rows
from selftrain.train.sft import IGNORE, tokenize_example
from selftrain.types import Sample

PROMPT = "Q: birthplace of founder of employer of Zorvan Keld?\n"
DOCS = {"Zorvan Keld": "Zorvan Keld was born in Lumo and works for Kelvar.",
        "Kelvar": "Kelvar is a company in Lumo, founded by Mira Tov.",
        "Mira Tov": "Mira Tov was born in Dava and works for Kelvar.",
        "Lumo": "Lumo is a city; its mayor is Mira Tov."}
PARTITION = Partition(key=agent.solution_key)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "title": t, "text": x}) + "\n"
                              for i, (t, x) in enumerate(DOCS.items())))
    return BM25Retriever(corpus)


def search(name: str) -> str:
    return f"<search> {name} </search>"


def episode(retriever, sid: str, query: str, turns: list[str], correct: bool,
            origin: str = "sample", parent: str | None = None):
    """A sample as the rollout worker records one: the trajectory's completion, its turns as
    steps, its observations as the loss mask."""
    traj = agent.replay([PROMPT], [turns], retriever, topk=1)[0]
    return traj, Sample(sample_id=sid, query_id=query, difficulty=3, prompt=PROMPT,
                  completion=traj.completion, steps=agent.split_steps(traj.completion),
                  answer=traj.answer, correct=correct, origin=origin, parent_id=parent,
                  loss_mask=[list(s) for s in traj.masked_spans] or None)


def crit(sample, first_error: int = -1) -> Critique:
    oks = [first_error < 0 or i < first_error for i in range(len(sample.steps))]
    return Critique(sample.sample_id, "hand", [StepVerdict(ok, float(ok)) for ok in oks])


def config(step_pairs: str = "continuation"):
    return from_dict({"arm": {"name": "critique"}, "critic": {"name": "countdown-oracle"},
                      "train": {"objective": "dpo",
                                "dpo": {"pairs_per_query": 4, "step_pairs": step_pairs}}})


def unmasked(text: str, spans) -> str:
    """The side's text less its masked spans: what the policy wrote."""
    keep, pos = [], 0
    for a, b in spans or []:
        keep.append(text[pos:a])
        pos = b
    return "".join(keep) + text[pos:]


@pytest.fixture(scope="module")
def step_round(retriever):
    """q1: the root searches its first entity again at turn 2 (the first wrong turn) and
    answers wrong; the repair replays turn 1 and follows the chain to the right answer. q2: a
    repair that answers right but the critic objects to: no pair."""
    root_traj, root = episode(retriever, "r0", "q1-3", [
        search("Zorvan Keld"), search("Zorvan Keld"), "<answer> Lumo </answer>"], False)
    repair_traj, repair = episode(retriever, "r0-a0", "q1-3", [
        search("Zorvan Keld"), search("Kelvar"), search("Mira Tov"), "<answer> Dava </answer>"],
        True, "refine", "r0")
    _, other = episode(retriever, "t0", "q2-3", [search("Lumo"), "<answer> Lumo </answer>"],
                          False)
    _, objected = episode(retriever, "t0-a0", "q2-3", [search("Lumo"), search("Kelvar"),
                                                          "<answer> Dava </answer>"], True,
                             "refine", "t0")
    samples = [root, other, repair, objected]
    critiques = {c.sample_id: c for c in [crit(root, 1), crit(repair), crit(other, 0),
                                          crit(objected, 1)]}
    return samples, critiques, root_traj, repair_traj


def test_a_step_pair_starts_at_the_first_wrong_turn_observations_masked(step_round):
    samples, critiques, root_traj, repair_traj = step_round
    pairs = build_pairs(config(), samples, critiques, PARTITION)
    assert [(p.query_id, p.origin, p.chosen_id, p.rejected_id) for p in pairs] == [
        ("q1-3", "step", "r0-a0", "r0")]
    pair = pairs[0]
    turn1 = root_traj.turns[0]
    assert pair.prompt == PROMPT + turn1.text + turn1.observation  # the good turn, its docs
    assert pair.chosen == "".join(t.text + t.observation for t in repair_traj.turns[1:])
    assert pair.rejected == "".join(t.text + t.observation for t in root_traj.turns[1:])
    # what is learned of each side: the policy's own turns, never a retrieved document
    assert unmasked(pair.chosen, pair.chosen_mask) == (
        search("Kelvar") + search("Mira Tov") + "<answer> Dava </answer>")
    assert unmasked(pair.rejected, pair.rejected_mask) == (
        search("Zorvan Keld") + "<answer> Lumo </answer>")
    for a, b in pair.chosen_mask + pair.rejected_mask:
        block = (pair.chosen if [a, b] in pair.chosen_mask else pair.rejected)[a:b]
        assert block.startswith("\n<information>Doc 1(Title: ") and block.endswith(
            "</information>\n")


def test_first_step_pairs_keep_one_turn_with_its_observation(step_round):
    samples, critiques, _, repair_traj = step_round
    pair = build_pairs(config("first_step"), samples, critiques, PARTITION)[0]
    kelvar = repair_traj.turns[1]
    assert pair.chosen == kelvar.text + kelvar.observation
    assert pair.chosen_mask == [[len(kelvar.text), len(pair.chosen)]]
    assert unmasked(pair.rejected, pair.rejected_mask) == search("Zorvan Keld")


def test_outcome_pairs_carry_each_samples_own_mask(retriever):
    _, good = episode(retriever, "g", "q1-2", [search("Kelvar"), "<answer> Mira Tov </answer>"],
                         True)
    _, bad = episode(retriever, "b", "q1-2", ["<search> Kelvar", "<answer> Lumo </answer>"],
                        False)  # an invalid turn: the corrective message is masked too
    cfg = from_dict({"arm": {"name": "rs"}, "critic": {"name": "countdown-oracle"},
                     "train": {"objective": "dpo"}})
    (pair,) = build_pairs(cfg, [good, bad], {}, PARTITION)
    assert (pair.chosen, pair.rejected) == (good.completion, bad.completion)
    assert (pair.chosen_mask, pair.rejected_mask) == (good.loss_mask, bad.loss_mask)
    assert agent.INVALID_OBSERVATION in unmasked(bad.completion, []) and \
        agent.INVALID_OBSERVATION not in unmasked(pair.rejected, pair.rejected_mask)


def test_dpo_learns_a_side_exactly_as_sft_learns_the_same_text(step_round, tmp_path):
    """Through pairs.parquet (pandas reads the masks back as arrays): the chosen side's labels
    are the SFT labels of the repair's training row from the same character on, and the
    learned tokens are the policy's turns plus EOS."""
    samples, critiques, _, _ = step_round
    pairs = build_pairs(config(), samples, critiques, PARTITION)
    write_parquet(tmp_path / "pairs.parquet", [p.row() for p in pairs], schema=PAIR_SCHEMA)
    rows = pd.read_parquet(tmp_path / "pairs.parquet").to_dict("records")
    tok = build_char_tokenizer()  # one token per character: offsets line up with text
    (encoded,) = encode_pairs(tok, rows, 4096)
    repair = next(s for s in samples if s.sample_id == "r0-a0")
    sft_ids, sft_labels = tokenize_example(
        tok, examples_from_rows([train_row(repair, 0)])[0], 4096)
    start = len(pairs[0].prompt)  # the pair's prompt = the query + the kept turn
    assert encoded.chosen[0] == sft_ids and encoded.chosen[1][start:] == sft_labels[start:]
    learned = [t for t in encoded.chosen[1] if t != IGNORE]
    policy_text = unmasked(pairs[0].chosen, pairs[0].chosen_mask)
    assert learned == tok(policy_text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    rejected = [t for t in encoded.rejected[1] if t != IGNORE]
    assert tok.decode(rejected[:-1]) == search("Zorvan Keld") + "<answer> Lumo </answer>"
