"""The named stages of a round. The driver (`loop.py`) calls them in order.

Each stage takes what it needs explicitly, fans its compute out to an actor group, and returns
plain records; writing files and recording the manifest is the driver's job.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from selftrain.arms import parts as arms
from selftrain.arms.arm import Arm
from selftrain.backends import Generation, SamplingConfig
from selftrain.cluster.groups import ActorGroup
from selftrain.cluster.workers import CritiqueChunk, GenerateChunk
from selftrain.config import Config
from selftrain.loop.prompts import PromptFormat
from selftrain.runfolder.schemas import eval_row
from selftrain.tasks import Task, abilities, graded
from selftrain.types import Critique, CritiqueRequest, Query, Sample


def chunk_seed(*parts: object) -> int:
    """A seed fixed by (run seed, round, stage, chunk): the same chunk always samples the same."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class GenJob:
    """Prompts to sample, and how."""

    prompts: list[str]
    params: SamplingConfig
    prefixes: list[list[str]] | None = None
    """Agent tasks, resume mode: policy turns to replay before the policy continues."""


def is_agent(task: Task) -> bool:
    """Tasks with an environment (`env()`) run multi-turn episodes instead of one generation."""
    return abilities(task).agent is not None


def run_generation(group: ActorGroup, job: GenJob, weights: str, batch_size: int,
                   seed_parts: tuple, desc: str, agent: bool = False,
                   each: Callable[[int, list[list[Generation]]], list] | None = None) -> list:
    """Fixed chunks of `batch_size` prompts, each with its own seed, spread over the workers.
    Without `each`: the generations of every prompt, in order. With `each(first, part)`: its
    results for each chunk (`first`: the chunk's first prompt), built as chunks arrive, so the
    driver's work on one chunk overlaps the workers' compute of the next."""
    per_chunk = max(1, batch_size // max(1, job.params.n))
    chunks, firsts = [], []
    for c, start in enumerate(range(0, len(job.prompts), per_chunk)):
        end = start + per_chunk
        chunks.append(GenerateChunk(job.prompts[start:end], job.params, chunk_seed(*seed_parts, c),
                                    weights, episodes=agent,
                                    prefixes=job.prefixes[start:end] if job.prefixes else None))
        firsts.append(start)
    out: list = []
    for part in group.map(chunks, desc=desc,
                          each=None if each is None else lambda c, part: each(firsts[c], part)):
        out.extend(part)
    return out


def make_sample(task: Task, query: Query, sample_id: str, gen: Generation, prefix: str = "",
                origin: str = "sample", parent_id: str | None = None,
                score: float | None = None) -> Sample:
    """One sample; for a graded task pass its `score` (`graded.scores`): correct = passing."""
    completion = prefix + gen.text
    shift = len(prefix)
    if abilities(task).graded is not None:
        if score is None and origin == "refine":
            score = graded.scores(task, query, [completion])[0]
        correct = graded.passes(task, score)
    else:
        correct = bool(task.is_correct(query, completion))
    return Sample(
        sample_id=sample_id, query_id=query.query_id, difficulty=query.difficulty,
        prompt=query.prompt, completion=completion, steps=task.split_steps(completion),
        answer=task.extract_answer(completion), correct=correct,
        origin=origin, parent_id=parent_id, num_tokens=gen.num_tokens,
        loss_mask=[[a + shift, b + shift] for a, b in gen.masked_spans] or None, score=score,
    )


# -- generate -------------------------------------------------------------------------------


def generate(cfg: Config, task: Task, group: ActorGroup, queries: list[Query], weights: str,
             k: int, num_samples: int, first_index: int = 0, origin: str = "sample") -> list[Sample]:
    """`num_samples` samples per query, in one batched call of seeded chunks. `first_index`
    continues the numbering (sample ids `r<k>-<query>-s<j>`) and the chunk seeds of a later
    call: a budget top-up or the next wave of adaptive sampling (origin "extra")."""
    params = SamplingConfig(n=num_samples, temperature=cfg.rollout.temperature,
                            top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
                            stop=task.stop)
    job = GenJob([q.prompt for q in queries], params)

    def samples_of(first: int, part: list[list[Generation]]) -> list[Sample]:
        samples = []
        for query, outs in zip(queries[first:], part):
            marks = graded.scores(task, query, [g.text for g in outs]) or [None] * len(outs)
            for j, (g, score) in enumerate(zip(outs, marks), start=first_index):
                samples.append(make_sample(task, query, f"r{k}-{query.query_id}-s{j}", g,
                                           origin=origin, score=score))
        return samples

    return run_generation(group, job, weights, cfg.rollout.batch_size,
                          (cfg.seed, k, "generate", first_index), f"round {k} generate",
                          agent=is_agent(task), each=samples_of)


def generate_pool(cfg: Config, arm: Arm, task: Task, group: ActorGroup, pool: list[Query],
                  weights: str, k: int, budget: int | None) -> tuple[list[Sample], dict[str, int]]:
    """The round's samples of the pool, and the generate stage's record.

    First pass: K samples per query. Fixed sampling with a token budget (a budget-matched arm)
    then tops every query up evenly until gen_tokens reach it, and K becomes the samples drawn
    per query. Adaptive sampling instead draws waves of K (`arms.sample_waves`); its extra
    samples are not first-pass (origin "extra"), so K stays `rollout.num_samples` and solve
    rates keep their meaning.
    """
    K = cfg.rollout.num_samples
    samples = generate(cfg, task, group, pool, weights, k, K)
    if not arm.adaptive:
        if budget is not None:
            extra = extra_samples_for_budget(budget, sum(s.num_tokens for s in samples), samples,
                                             len(pool))
            if extra:
                samples += generate(cfg, task, group, pool, weights, k, extra, first_index=K)
        return samples, {"samples_per_query": len(samples) // len(pool)}

    def draw(queries: list[Query], first_index: int) -> list[Sample]:
        return generate(cfg, task, group, queries, weights, k, K, first_index, origin="extra")

    sampling = arm.sampling(pool, arm.partition(task.solution_key))
    extra, waves = arms.sample_waves(pool, samples, sampling, draw, K, arm.config.max_waves, budget)
    return samples + extra, {"samples_per_query": K, "extra_samples": len(extra), "waves": waves}


# -- critique and refine --------------------------------------------------------------------


def critique(group: ActorGroup, batch_size: int, requests: list[CritiqueRequest],
             desc: str) -> list[Critique]:
    chunks = [CritiqueChunk(requests[i : i + batch_size])
              for i in range(0, len(requests), batch_size)]
    out: list[Critique] = []
    for part in group.map(chunks, desc=desc):
        out.extend(part)
    return out


def requests_for(samples: list[Sample], queries: dict[str, Query]) -> list[CritiqueRequest]:
    return [CritiqueRequest(sample_id=s.sample_id, query=queries[s.query_id], steps=s.steps,
                            completion=s.completion) for s in samples]


def good_steps(sample: Sample, crit: Critique) -> list[str]:
    """The steps before the first error: what a `resume` repair keeps.

    A failed sample whose steps all pass (it stopped short of the answer) keeps all its steps.
    """
    cut = crit.first_error if crit.first_error >= 0 else len(sample.steps)
    return sample.steps[:cut]


def refine(cfg: Config, task: Task, rollout: ActorGroup, critic: ActorGroup,
           queries: dict[str, Query], failed: list[tuple[Sample, Critique]], weights: str,
           k: int, prompts: PromptFormat) -> tuple[list[Sample], list[Critique]]:
    """Up to R attempts per failed sample, each guided by the latest critique.

    `resume` keeps the steps before `first_error` and lets the policy continue; `rewrite`
    prompts with the query, the failed attempt and the critique's feedback. Every refinement
    is checked like a sample and critiqued (for the process filter and the next attempt); a
    chain stops at its first refinement that is correct and passes the critic.
    """
    rc = cfg.refine
    params = SamplingConfig(n=1, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            max_new_tokens=cfg.rollout.max_new_tokens, stop=task.stop)
    agent = is_agent(task)
    all_refinements: list[Sample] = []
    all_critiques: list[Critique] = []
    frontier = failed
    for attempt in range(rc.attempts):
        if not frontier:
            break
        asks = [_ask_again(cfg, agent, queries[s.query_id], s, c, prompts) for s, c in frontier]
        texts, prefixes, turns = (list(x) for x in zip(*asks))
        job = GenJob(texts, params, prefixes=turns if agent and rc.mode == "resume" else None)
        gens = run_generation(rollout, job, weights, cfg.rollout.batch_size,
                              (cfg.seed, k, "refine", attempt), f"round {k} refine {attempt + 1}",
                              agent=agent)
        new = []
        for (sample, _), prefix, outs in zip(frontier, prefixes, gens):
            root = sample.parent_id or sample.sample_id
            new.append(make_sample(task, queries[sample.query_id], f"{root}-a{attempt}",
                                   outs[0], prefix=prefix, origin="refine", parent_id=root))
        crits = critique(critic, cfg.critic.batch_size, requests_for(new, queries),
                         f"round {k} critique refinements {attempt + 1}")
        all_critiques.extend(crits)
        all_refinements.extend(new)
        frontier = [(s, c) for s, c in zip(new, crits) if not (s.correct and c.passed)]
    return all_refinements, all_critiques


def _ask_again(cfg: Config, agent: bool, query: Query, sample: Sample, crit: Critique,
               prompts: PromptFormat) -> tuple[str, str, list[str]]:
    """(prompt, completion prefix, agent turns to replay) of one refinement attempt.

    `resume` continues after the good steps (an agent replays its good turns, observations
    recomputed); `rewrite` asks again with the attempt and the feedback; with a chat template
    that is a new user turn holding the question, so the old prompt is not nested in it.
    """
    if cfg.refine.mode == "resume" and agent:
        return query.prompt, "", good_steps(sample, crit)
    if cfg.refine.mode == "resume":
        prefix = "".join(step + "\n" for step in good_steps(sample, crit))
        return query.prompt + prefix, prefix, []
    text = cfg.refine.template.format(prompt=query.user_message or query.prompt,
                                      attempt=sample.completion, feedback=crit.feedback)
    return prompts.render(text), "", []


# -- filter ---------------------------------------------------------------------------------


def select_training_set(arm: Arm, task: Task, pool: list[Query], samples: list[Sample],
                        critiques: dict[str, Critique], num_samples: int) -> list[Sample]:
    """The arm's rule: which samples and refinements become training rows (`Arm.select`:
    the filter, dedup, then selection up to each query's row cap); K is `num_samples`."""
    return arm.select(pool, samples, critiques, arm.partition(task.solution_key), num_samples)


# -- evaluate -------------------------------------------------------------------------------


def evaluate(cfg: Config, task: Task, group: ActorGroup, queries: list[Query], weights: str,
             k: int, on_texts: Callable[[list[str]], None] | None = None) -> list[dict]:
    """n samples per test query; one row of eval.parquet each. `on_texts` gets each chunk's
    completions as the chunk arrives (the round starts embedding them for its metrics)."""
    params = SamplingConfig(n=cfg.eval.num_samples, temperature=cfg.eval.temperature,
                            top_p=cfg.rollout.top_p, max_new_tokens=cfg.rollout.max_new_tokens,
                            stop=task.stop)
    job = GenJob([q.prompt for q in queries], params)
    # Evaluation is seeded by the run seed only, not the round: every round's policy is
    # judged on the same random stream, which lowers round-to-round noise.

    def rows_of(first: int, part: list[list[Generation]]) -> list[dict]:
        rows = []
        for query, outs in zip(queries[first:], part):
            marks = graded.scores(task, query, [g.text for g in outs])
            for j, g in enumerate(outs):
                if marks is None:
                    correct, score = bool(task.is_correct(query, g.text)), None
                else:
                    correct, score = graded.passes(task, marks[j]), marks[j]
                rows.append(eval_row(query, j, g.text, task.extract_answer(g.text), correct,
                                     g.num_tokens, score))
        if on_texts is not None:
            on_texts([row["completion"] for row in rows])
        return rows

    return run_generation(group, job, weights, cfg.rollout.batch_size, (cfg.seed, "evaluate"),
                          f"round {k} evaluate", agent=is_agent(task), each=rows_of)


def extra_samples_for_budget(target_tokens: int, spent: int, samples: list[Sample],
                             num_queries: int) -> int:
    """Samples per query to add so first-pass tokens reach `target_tokens` (budget matching)."""
    if spent >= target_tokens or not samples:
        return 0
    per_sample = max(1.0, spent / len(samples))
    return math.ceil((target_tokens - spent) / (per_sample * num_queries))
