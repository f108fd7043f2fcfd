"""Preference pairs from a round's samples, critiques and refinements (`train.objective: dpo`).

The arm's filter decides what may be chosen (`Arm.filter.eligible`: rs, outcome-correct samples;
critique, those whose steps the critic also passes); the rejected side is always a wrong
sample the policy wrote. Refinements enter only as the chosen side of step pairs. Two kinds of pair, written to `round_<k>/pairs.parquet` in TRL's
preference layout (`prompt`, `chosen`, `rejected`) so the file also feeds TRL unchanged:

- outcome (Iterative RPO, Pang et al. 2024): a query's chosen candidates among the samples it
  drew (first pass and later waves) against its wrong ones, paired in turn (the i-th pair: candidate i mod C, wrong sample i mod W),
  so every candidate and every wrong sample is used before any pair repeats one;
- step (Step-DPO, Lai et al. 2024): a `resume` repair that is correct and passes the critic,
  against the attempt it repaired. prompt = the query + the steps before that attempt's first
  error; chosen = the repair's continuation from there, rejected = the attempt's own
  (`train.dpo.step_pairs: first_step` keeps only the first step of each side). A search
  agent's likewise: prompt = the query + its turns before the first wrong one, observations
  included; chosen and rejected = the two continuations from that turn.

An agent's observations (what the retriever wrote, `Sample.loss_mask`) stay in each side's text
and are left out of its log-probs exactly as SFT leaves them out of its loss: each side carries
its own character spans (`chosen_mask`, `rejected_mask`).

Selection orders the chosen candidates as it orders SFT rows: `diverse` puts a query's rarest
solution class first (DARLING's idea, for pairs). On a graded task the outcome pairs go by score
instead (selftrain/arms/score_pairs.py): chosen = the higher score, rejected = a lower one at
least `train.dpo.score_margin` below it; unknown scores are never in a pair. A query keeps at most
`train.dpo.pairs_per_query` pairs, its step pairs first. A query without a pair contributes
nothing; `pair_coverage@L` shows which levels still teach the policy something.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING

from selftrain.arms import parts as arms
from selftrain.arms import score_pairs as graded
from selftrain.arms.arm import Arm
from selftrain.types import Critique, Sample

if TYPE_CHECKING:
    from selftrain.config import Config

@dataclass
class Pair:
    """One row of pairs.parquet (`selftrain.runfolder.schemas.PAIR_SCHEMA`)."""

    prompt: str
    chosen: str
    rejected: str
    query_id: str
    difficulty: int
    origin: str
    """"outcome" or "step"."""
    chosen_id: str
    rejected_id: str
    """sample_ids of the two sides (a step pair's chosen side is a refinement)."""
    chosen_mask: list[list[int]] | None = None
    rejected_mask: list[list[int]] | None = None
    """[start, end) character spans of each side that are context, not policy output (an
    agent's observations), as train.parquet's `loss_mask`; None: every character is learned."""

    def row(self) -> dict:
        return asdict(self)


def build_pairs(cfg: Config, samples: list[Sample], critiques: dict[str, Critique],
                partition: arms.Partition) -> list[Pair]:
    """The round's pairs, query by query in order of first appearance."""
    arm, dpo = Arm.of(cfg.arm), cfg.train.dpo
    drawn = [s for s in arm.filter.eligible(samples, critiques) if s.origin != "refine"]
    chosen = arms.by_query(drawn)
    if arm.config.selection == "diverse":  # a class's size counts repeats: rarity among draws
        chosen = {q: arms.diverse_order(cs) for q, cs in partition(chosen).items()}
    chosen = {q: arms.drop_duplicates(cs) for q, cs in chosen.items()}
    wrong = arms.by_query(arms.drop_duplicates(
        [s for s in samples if s.origin != "refine" and not s.correct]))
    steps: dict[str, list[Pair]] = {}
    if cfg.refine.mode == "resume":
        for pair in step_pairs(samples, critiques, dpo.step_pairs):
            steps.setdefault(pair.query_id, []).append(pair)
    pair_up = outcome_pairs
    if any(s.score is not None for s in samples):  # a graded task: sides by score
        wrong = arms.by_query(arms.drop_duplicates(
            graded.known([s for s in samples if s.origin != "refine"])))
        if arm.config.selection != "diverse":
            chosen = {q: graded.by_score(cs) for q, cs in chosen.items()}
        pair_up = partial(graded_pairs, margin=dpo.score_margin)
    out = []
    for q in arms.by_query(samples):
        mine = steps.get(q, []) + pair_up(chosen.get(q, []), wrong.get(q, []))
        out += mine[: dpo.pairs_per_query]
    return out


def outcome_pairs(chosen: list[Sample], wrong: list[Sample]) -> list[Pair]:
    """Candidate i mod C against wrong sample i mod W, for i < max(C, W): distinct pairs that
    use every sample on both sides once before repeating any."""
    if not chosen or not wrong:
        return []
    return [_pair(chosen[i % len(chosen)], wrong[i % len(wrong)], "", chosen[i % len(chosen)]
                  .completion, wrong[i % len(wrong)].completion, "outcome")
            for i in range(max(len(chosen), len(wrong)))]


def graded_pairs(chosen: list[Sample], scored: list[Sample], margin: float) -> list[Pair]:
    """A graded task's outcome pairs: sides by score, at least `margin` apart
    (`selftrain.arms.score_pairs.score_pairs`)."""
    return [_pair(c, r, "", c.completion, r.completion, "outcome")
            for c, r in graded.score_pairs(chosen, scored, margin)]


def step_pairs(samples: list[Sample], critiques: dict[str, Critique], mode: str) -> list[Pair]:
    """A pair for each verified `resume` repair whose repaired attempt has a located first
    error. A root's refinements form a chain (attempt n repairs attempt n-1, the first repairs
    the root sample), so the repaired attempt is the one before it in sample order."""
    by_id = {s.sample_id: s for s in samples}
    last: dict[str, Sample] = {}
    out = []
    for s in samples:
        if s.origin != "refine" or s.parent_id not in by_id:
            continue
        repaired = last.get(s.parent_id, by_id[s.parent_id])
        last[s.parent_id] = s
        crit, own = critiques.get(repaired.sample_id), critiques.get(s.sample_id)
        if not (s.correct and own is not None and own.passed and crit is not None):
            continue
        pair = _step_pair(repaired, crit, s, mode)
        if pair is not None:
            out.append(pair)
    return out


def _step_pair(repaired: Sample, crit: Critique, repair: Sample, mode: str) -> Pair | None:
    """prompt = query + the good steps (as `resume` wrote them before the repair); None when no
    error was located or the repair does not start with those steps."""
    cut = crit.first_error
    if cut < 0:
        return None
    prefix = kept_steps(repaired, cut)
    if not repair.completion.startswith(prefix):
        return None
    chosen = repair.completion[len(prefix):]
    rejected = (repaired.completion[len(prefix):] if repaired.completion.startswith(prefix)
                else "".join(step + "\n" for step in repaired.steps[cut:]))
    if mode == "first_step" and _turns(repaired) and _turns(repair):  # an agent's turn, its docs
        chosen = chosen[: _step_length(repair, cut)]
        rejected = rejected[: _step_length(repaired, cut)]
    elif mode == "first_step":
        chosen, rejected = _first_line(chosen), _first_line(rejected)
    if not chosen.strip() or chosen == rejected:
        return None
    return _pair(repair, repaired, prefix, chosen, rejected, "step")


def kept_steps(sample: Sample, cut: int) -> str:
    """The text a `resume` repair keeps before step `cut`, as `stages._ask_again` writes it: an
    agent's turns as they stand in the completion (observations included), a text task's lines
    each with its newline."""
    if _turns(sample):
        return "".join(sample.steps[:cut])
    return "".join(step + "\n" for step in sample.steps[:cut])


def _turns(sample: Sample) -> bool:
    """Steps that concatenate back to the completion: an agent's turns (text + observation).
    A text task's lines lose their newlines, so only a one-line sample matches, and a
    one-step sample's prefix and first step read the same either way."""
    return "".join(sample.steps) == sample.completion


def _step_length(sample: Sample, i: int) -> int:
    return len(sample.steps[i]) if i < len(sample.steps) else 0


def side_mask(mask: list[list[int]] | None, start: int, length: int) -> list[list[int]] | None:
    """A sample's masked spans, within its side: the completion's text from `start`, `length`
    characters long."""
    spans = [[max(0, a - start), min(length, b - start)] for a, b in mask or []]
    return [s for s in spans if s[1] > s[0]] or None


def _first_line(text: str) -> str:
    head, newline, _ = text.lstrip("\n").partition("\n")
    return head + newline


def _pair(chosen: Sample, rejected: Sample, prefix: str, chosen_text: str, rejected_text: str,
          origin: str) -> Pair:
    """`prefix`: the text both sides' completions start with (the kept steps of a step pair)."""
    return Pair(prompt=chosen.prompt + prefix, chosen=chosen_text, rejected=rejected_text,
                query_id=chosen.query_id, difficulty=chosen.difficulty, origin=origin,
                chosen_id=chosen.sample_id, rejected_id=rejected.sample_id,
                chosen_mask=side_mask(chosen.loss_mask, len(prefix), len(chosen_text)),
                rejected_mask=side_mask(rejected.loss_mask, len(prefix), len(rejected_text)))
