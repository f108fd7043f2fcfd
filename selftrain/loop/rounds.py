"""The stages of one round, as the driver (`loop.py`) calls them.

Each stage either reads its finished outputs back (the manifest says it is done: a resumed run)
or runs inside `Round.stage(name)`, which keeps the bookkeeping in one place: the clock, the
manifest record of the files the stage wrote, and, when the stage fails, a `StageError` that
names round, stage and the cause. The compute lives in `stages.py`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from selftrain.arms.pairs import build_pairs
from selftrain.cluster.trainer import finetune_job
from selftrain.errors import Interrupted, StageError
from selftrain.loop import stages
from selftrain.loop.round_metrics import (
    RoundFrames,
    embeds_eval,
    example_rows,
    finetune_figures,
    metrics_embedder,
    round_histograms,
    round_metrics,
)
from selftrain.metrics.embed import prefetch, take_prefetch_seconds
from selftrain.runfolder.folder import atomic_write_json, write_parquet, write_table
from selftrain.runfolder.schemas import (
    PAIR_SCHEMA,
    PAIRS_FILE,
    TRAIN_SCHEMA,
    first_pass,
    read_critiques,
    read_samples,
    scored_rows,
    train_row,
)
from selftrain.train.objectives import make_objective
from selftrain.types import Critique, Sample

if TYPE_CHECKING:
    from selftrain.loop.run import RunContext

log = logging.getLogger("selftrain")


@dataclass
class StageRecord:
    """What a running stage reports: `record(files, **info)` once its files are written."""

    round: Round
    name: str
    started: float = field(default_factory=time.time)
    parts: dict[str, float] = field(default_factory=dict)
    """Seconds of the stage's named parts (`part()`): the manifest's `parts`, never metrics."""

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time a part of the stage (dispatch and compute, writes), so a benchmark can tell a
        stage's fixed seconds from its compute."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = round(self.parts.get(name, 0.0) + time.perf_counter() - start, 4)

    def record(self, files: list[Path], **info: Any) -> None:
        seconds = round(time.time() - self.started, 3)
        self.round.times[self.name] = seconds
        extra = {"parts": self.parts} if self.parts else {}
        self.round.run.folder.mark_done(self.round.k, self.name, files, seconds=seconds,
                                        started=round(self.started, 3), **extra, **info)
        log.info("round %d, stage %s recorded (%.1f s)", self.round.k, self.name, seconds)


class Round:
    """The stages of round k of one run."""

    def __init__(self, run: RunContext, k: int) -> None:
        self.run, self.k, self.cfg = run, k, run.cfg
        self.dir = run.folder.round_dir(k)
        self.times: dict[str, float] = {}

    def done(self, stage: str) -> bool:
        """Whether the manifest records the stage (its time then counts from the record)."""
        if self.run.folder.is_done(self.k, stage):
            self.times[stage] = self.run.folder.stage_info(self.k, stage).get("seconds", 0.0)
            return True
        return False

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Time and record a stage; any failure inside it becomes a `StageError`."""
        rec = StageRecord(self, name)
        try:
            yield rec
        except (StageError, Interrupted):
            raise
        except KeyboardInterrupt as err:
            raise Interrupted(self.k, name) from err
        except Exception as err:
            raise StageError(self.k, name, err) from err

    @property
    def complete(self) -> bool:
        """Round k's figures are recorded: a resumed run reads nothing else of it."""
        return self.run.folder.is_done(self.k, "metrics")

    def finetune(self, policy: str) -> str:
        """The objective (`train.objective`: SFT, DPO) on what the previous round's filter wrote,
        from the base model or from `policy`."""
        ckpt = self.dir / "checkpoint"
        if self.done("finetune"):
            return self.run.folder.stage_info(self.k, "finetune").get("carried_over", str(ckpt))
        run, train = self.run, self.cfg.train
        train_path = run.folder.round_dir(self.k - 1) / self.data_file
        if pq.read_metadata(train_path).num_rows == 0:
            return self._carry_over(policy)
        with self.stage("finetune") as st:
            job = finetune_job(train, init_path=run.base if train.init == "base" else policy,
                               train_path=train_path, out_path=ckpt,
                               seed=self.cfg.seed + self.k, base=run.base)
            with st.part("warm_wait"):
                run.trainer.wait_warm()
            with st.part("dispatch_compute"):
                ranks = run.trainer.finetune(job)
            st.record([ckpt], init=train.init, init_path=job.init_path, loss=ranks[0]["loss"],
                      steps=ranks[0]["steps"], workers=ranks)
        if not train.keep_checkpoints and self.k >= 2 and \
                "carried_over" not in run.folder.stage_info(self.k - 1, "finetune"):
            previous = run.folder.round_dir(self.k - 1) / "checkpoint"
            run.folder.prune(self.k - 1, "finetune", previous)
        return str(ckpt)

    def _carry_over(self, policy: str) -> str:
        """Round k-1 accepted no sample: there is nothing to finetune on, so round k's policy is
        round k-1's, unchanged (recorded as the stage's `carried_over`, said in one line)."""
        from selftrain.tracking import console

        with self.stage("finetune") as st:
            st.record([], carried_over=policy, rows=0)
        console.print(f"[yellow]round {self.k}: round {self.k - 1} accepted no sample (empty "
                      f"training set); no finetune, the policy carries over unchanged[/]")
        return policy

    def generate(self, policy: str) -> list[Sample]:
        """K first-pass samples per pool query, then what the arm's sampling adds: a budget
        top-up (fixed sampling, budget-matched) or waves of K (balanced, distinct)."""
        path = self.dir / "samples.parquet"
        if self.done("generate"):  # the file may hold refinements by now: leave them out
            return [s for s in read_samples(path) if s.origin != "refine"]
        run, cfg = self.run, self.cfg
        with self.stage("generate") as st:
            target = run.budget.tokens(self.k) if run.budget is not None else None
            with st.part("dispatch_compute"):
                samples, info = stages.generate_pool(cfg, run.arm, run.task, run.rollout, run.pool,
                                                     policy, self.k, target)
            with st.part("write"):
                write_parquet(path, scored_rows([s.row() for s in samples]))
            st.record([path], **info)
        return samples

    def difficulty(self, policy: str) -> dict[str, int]:
        """Levels from the base policy's solve rates (round 0, tasks that ask for it).

        Pool rates from the first K samples per query (never a budget top-up, so every arm
        gets the same levels), test rates from eval.parquet, one quantile scale for both
        (`task.assign_difficulty`). The levels go to difficulty.json and into this round's
        samples and eval files; the driver applies them to the run's queries.
        """
        path = self.dir / "difficulty.json"
        if self.done("difficulty"):
            return {q: int(v) for q, v in json.loads(path.read_text()).items()}
        samples = self.generate(policy)
        self.evaluate(policy)
        with self.stage("difficulty") as st:
            hits: dict[str, list[bool]] = defaultdict(list)
            for s in first_pass(samples, self.cfg.rollout.num_samples):
                hits[s.query_id].append(s.correct)
            evals = pq.read_table(self.dir / "eval.parquet").to_pandas()
            rates = {q: sum(v) / len(v) for q, v in hits.items()}
            rates |= evals.groupby("query_id")["correct"].mean().astype(float).to_dict()
            levels = self.run.task.assign_difficulty(rates)
            atomic_write_json(path, levels)
            files = [path] + [_relevel(self.dir / name, levels)
                              for name in ("samples.parquet", "eval.parquet")]
            st.record(files, levels=sorted(set(levels.values())))
        return levels

    def critique(self, samples: list[Sample]) -> dict[str, Critique]:
        """Step-level critiques of every first-pass sample."""
        path = self.dir / "critiques.parquet"
        if self.done("critique"):
            return read_critiques(path)
        with self.stage("critique") as st:
            found = stages.critique(self.run.critic, self.cfg.critic.batch_size,
                                    stages.requests_for(samples, self.run.queries),
                                    f"round {self.k} critique")
            write_parquet(path, [c.row() for c in found])
            st.record([path])
        return {c.sample_id: c for c in found}

    def refine(self, samples: list[Sample], critiques: dict[str, Critique],
               policy: str) -> tuple[list[Sample], dict[str, Critique]]:
        """Critique-guided repairs of the failed samples; samples/critiques files gain them."""
        samples_path, critiques_path = self.dir / "samples.parquet", self.dir / "critiques.parquet"
        if self.done("refine"):
            return read_samples(samples_path), read_critiques(critiques_path)
        run = self.run
        with self.stage("refine") as st:
            failed = [(s, critiques[s.sample_id]) for s in samples if not s.correct]
            refinements, found = stages.refine(self.cfg, run.task, run.rollout, run.critic,
                                               run.queries, failed, policy, self.k, run.prompts)
            samples = samples + refinements
            critiques = critiques | {c.sample_id: c for c in found}
            write_parquet(samples_path, scored_rows([s.row() for s in samples]))
            write_parquet(critiques_path, [critiques[s.sample_id].row() for s in samples])
            st.record([samples_path, critiques_path], refinements=len(refinements))
        return samples, critiques

    @property
    def data_file(self) -> str:
        """What the filter writes and the next round's finetune learns from."""
        return make_objective(self.cfg.train.objective).data_file

    def filter(self, samples: list[Sample], critiques: dict[str, Critique]) -> None:
        """The arm's filter and selection turn samples and refinements into train.parquet
        (or, for an objective that learns from pairs, into pairs.parquet)."""
        path = self.dir / "train.parquet"
        if self.done("filter"):
            return
        if self.data_file == PAIRS_FILE:
            return self._pairs(samples, critiques)
        with self.stage("filter") as st:
            kept = stages.select_training_set(self.run.arm, self.run.task, self.run.pool, samples,
                                              critiques, self.cfg.rollout.num_samples)
            tokens = _completion_tokens(self.run.tokenizer, kept)
            rows = [train_row(s, n) for s, n in zip(kept, tokens)]
            with st.part("write"):
                write_parquet(path, rows, schema=TRAIN_SCHEMA)
            st.record([path])

    def _pairs(self, samples: list[Sample], critiques: dict[str, Critique]) -> None:
        """Preference pairs (selftrain/arms/pairs.py): the arm's filter decides chosen and rejected."""
        path = self.dir / PAIRS_FILE
        with self.stage("filter") as st:
            pairs = build_pairs(self.cfg, samples, critiques,
                                self.run.arm.partition(self.run.task.solution_key))
            write_parquet(path, [p.row() for p in pairs], schema=PAIR_SCHEMA)
            st.record([path], pairs=len(pairs))

    def evaluate(self, policy: str) -> None:
        """n samples per test query into eval.parquet."""
        path = self.dir / "eval.parquet"
        if self.done("evaluate"):
            return
        run = self.run
        with self.stage("evaluate") as st:
            with st.part("dispatch_compute"):
                rows = stages.evaluate(self.cfg, run.task, run.rollout, run.test, policy, self.k,
                                       on_texts=self.prefetch())
            with st.part("write"):
                write_parquet(path, scored_rows(rows))
            st.record([path])

    def prefetch(self) -> Callable[[list[str]], None] | None:
        """What evaluate hands each chunk's completions to: with `metrics.prefetch_embeddings`,
        a background embedding for this round's metrics (same embedder, so they find it)."""
        if not embeds_eval(self.cfg):
            return None
        return functools.partial(prefetch, embedder=metrics_embedder(self.cfg))

    def metrics(self, policy: str) -> dict[str, Any]:
        """Every figure of docs/metrics.md, recomputed from this round's files."""
        path = self.dir / "metrics.json"
        if self.done("metrics"):
            return self.read_metrics()
        run, k = self.run, self.k
        with self.stage("metrics") as st:
            per_query = run.folder.stage_info(k, "generate")["samples_per_query"]
            frames = RoundFrames.read(self.dir)
            metrics = round_metrics(self.cfg, run.task, frames, run.pool, run.test, per_query,
                                    self.times, run.tokenizer, part=st.part)
            metrics["skipped_prompts"] = sum(run.skipped.values())
            if k > 0:  # the objective's own figures (dpo: train/*) of the finetune that made it
                metrics |= finetune_figures(run.folder.stage_info(k, "finetune"))
            atomic_write_json(self.dir / "histograms.json",
                              round_histograms(run.task, frames, run.pool, per_query))
            atomic_write_json(self.dir / "examples.json", example_rows(frames, k))
            atomic_write_json(path, metrics)
            st.record([path, self.dir / "histograms.json", self.dir / "examples.json"],
                      embed_prefetch_s=round(take_prefetch_seconds(), 3),
                      embed_precision=metrics_embedder(self.cfg).precision)
        run.tracker.log_round(k, self.dir, policy if k > 0 else None)
        if run.tracker.run_id:
            run.folder.set_meta(wandb_logged_round=k)
        return metrics

    def read_metrics(self) -> dict[str, Any]:
        self.done("metrics")
        return json.loads((self.dir / "metrics.json").read_text())


def _relevel(path: Path, levels: dict[str, int]) -> Path:
    """Rewrite the `difficulty` column of a round file from {query_id: level}, atomically."""
    table = pq.read_table(path)
    ids = table.column("query_id").to_pylist()
    old = table.column("difficulty").to_pylist()
    column = pa.array([levels.get(q, d) for q, d in zip(ids, old)],
                      type=table.schema.field("difficulty").type)
    write_table(path, table.set_column(table.schema.get_field_index("difficulty"), "difficulty",
                                       column))
    return path


def _completion_tokens(tokenizer, kept: list[Sample]) -> list[int]:
    """Tokens trained on per row: the completion (minus masked spans) plus EOS."""
    texts = []
    for s in kept:
        text, pos = "", 0
        for start, end in sorted(s.loss_mask or []):
            text += s.completion[pos:start]
            pos = end
        texts.append(text + s.completion[pos:])
    if not texts:
        return []
    return [len(ids) + 1 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
