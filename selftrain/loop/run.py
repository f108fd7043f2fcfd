"""Opening a run: the folder (locked, checked), the task, Ray and its actor groups, the tracker.

`open_run` is a context manager around everything one arm's rounds share (`RunContext`); the
round loop itself is in `loop.py`. On the way out it shuts the groups down, finishes the wandb
run with the run's exit code and releases the folder. A failure inside is written, with every
traceback, to `<run>/logs/selftrain.log` and raised as `RunFailed`, which the CLI prints in a
few lines with the command that continues the run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from selftrain.arms.arm import Arm
from selftrain.cluster.cluster_watch import ClusterWatch
from selftrain.cluster.groups import ActorGroup
from selftrain.cluster.pool import GroupPool
from selftrain.cluster.ray_start import start_ray
from selftrain.cluster.trainer import TrainerGroup
from selftrain.config import Config, dump_yaml
from selftrain.errors import EXIT_INTERRUPTED, Interrupted, RunFailed, describe, full_report
from selftrain.heap import settle_heap
from selftrain.loop.config_change import record_config_changes
from selftrain.loop.prompts import PromptFormat
from selftrain.loop.run_groups import group_keys, release_groups, start_groups
from selftrain.runfolder.budget import BudgetTarget, arm_dir
from selftrain.runfolder.folder import RunFolder, atomic_write_bytes, open_folder
from selftrain.runfolder.storage import storage_for
from selftrain.tasks import Task
from selftrain.tracking import Tracker, console
from selftrain.types import Query

log = logging.getLogger("selftrain")


@dataclass
class RunContext:
    """What every round of one arm shares: config, task, workers, folder, tracker, queries."""

    cfg: Config
    label: str
    """The arm's label (its folder name), e.g. rs_budget."""
    arm: Arm
    """The arm's filter x sampling x selection, built once from `cfg.arm`."""
    task: Task
    folder: RunFolder
    base: str
    """The base policy: a model folder or hub id."""
    rollout: ActorGroup
    critic: ActorGroup | None
    trainer: TrainerGroup
    """The training ranks, started once for the run (each round's finetune)."""
    tracker: Tracker
    tokenizer: Any
    """The policy's tokenizer (shared by every round's checkpoint): prompt lengths, token counts."""
    prompts: PromptFormat
    """How the policy sees a user message (plain, or its chat template)."""
    pool: list[Query]
    test: list[Query]
    budget: BudgetTarget | None = None
    """Budget matching: the run whose gen_tokens this one reaches, round by round."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Queries whose prompt does not fit the model's context (skipped and counted)."""

    @property
    def queries(self) -> dict[str, Query]:
        """The pool by query id."""
        return {q.query_id: q for q in self.pool}

    def apply_levels(self, levels: dict[str, int]) -> None:
        """Give pool and test queries the levels the difficulty stage assigned."""
        self.pool = [replace(q, difficulty=levels.get(q.query_id, q.difficulty)) for q in self.pool]
        self.test = [replace(q, difficulty=levels.get(q.query_id, q.difficulty)) for q in self.test]


@contextmanager
def open_run(cfg: Config, label: str, *, resume: bool = False, overwrite: bool = False,
             budget: BudgetTarget | None = None,
             reuse: GroupPool | None = None) -> Iterator[RunContext]:
    """Everything one arm's rounds share, opened in order and closed whatever happens.
    `reuse`: a sequential compare's groups, taken over from the run before and kept for the
    next when this one finishes (`selftrain.loop.run_groups`)."""
    from transformers import AutoTokenizer

    from selftrain.loop.resume import check_recorded_files
    from selftrain.models.source import resolve_model
    from selftrain.tasks import build_task
    from selftrain.train.rank_trainer import check_setup

    storage = storage_for(cfg.run_root, cfg.staging_dir)
    folder = open_folder(arm_dir(cfg, label), storage, resume=resume, overwrite=overwrite)
    groups: dict[str, Any] = {}
    tracker: Tracker | None = None
    kept: dict[str, str] = {}  # the groups handed on to the next run, by name: their keys
    watch: ClusterWatch | None = None
    finished = threading.Event()
    with _run_log(folder) as log_path:
        try:
            task = build_task(cfg.task.name, cfg.task.path, cfg.task.args)
            arm = Arm.of(cfg.arm)
            if resume:
                check_recorded_files(folder, cfg)  # before Ray starts
            base = str(resolve_model(cfg, task))
            prompts = PromptFormat.of(cfg, AutoTokenizer.from_pretrained(base), base)
            check_setup(cfg.train, base)  # LoRA targets, FSDP layers: before Ray starts
            _prepare_folder(cfg, label, folder, base, budget)
            _say(f"run folder: {storage.uri_of(folder.path)} (log: {log_path})")
            if budget is None and folder.manifest.get("budget_from"):
                budget = BudgetTarget(folder.path / folder.manifest["budget_from"])
            start_ray(cfg, folder.path.parents[2] / ".ray")
            watch = ClusterWatch(lambda kind: _cluster_lost(kind, folder, finished.is_set()))
            start_groups(cfg, arm, base, storage, groups, reuse)
            tracker = Tracker(cfg, folder, label)
            pool, test, skipped = _fitting_queries(cfg, task, folder, base, prompts)
            run = RunContext(cfg=cfg, label=label, arm=arm, task=task, folder=folder, base=base,
                             rollout=groups["rollout"], critic=groups.get("critic"),
                             trainer=groups["train"], tracker=tracker,
                             tokenizer=prompts.tokenizer,
                             prompts=prompts, pool=pool, test=test, budget=budget,
                             skipped=skipped)
            tracker.replay(folder, base)
            settle_heap()  # what the driver has loaded stays for the run
            yield run
            tracker.finish(exit_code=0)
            kept = group_keys(cfg, arm, base) if reuse is not None else {}
            folder.publish([folder.path / "wandb"] if (folder.path / "wandb").is_dir() else [])
            wandb = folder.path / "wandb"
            _say(f"run finished: {storage.uri_of(folder.path)}"
                 + (f" (wandb: {wandb})" if wandb.is_dir() else ""))
            finished.set()
        except KeyboardInterrupt as err:
            raise _interrupted(err, folder, tracker) from None
        except BaseException as err:
            if tracker is not None:
                tracker.finish(exit_code=1)
            if isinstance(err, (SystemExit, *_bad_input())):
                raise  # bad input is named in one line by the CLI, without a traceback
            log.error("run %s failed:\n%s", folder.path, full_report(err))
            raise RunFailed(describe(err), folder.path, log_path) from err
        finally:
            _close(watch, groups, reuse, kept, folder, finished.is_set())


def _interrupted(err: KeyboardInterrupt, folder: RunFolder,
                 tracker: Tracker | None) -> Interrupted:
    """Ctrl-C: logged, the wandb run finished with exit code 130, and where it stopped."""
    stopped = err if isinstance(err, Interrupted) else Interrupted()
    stopped.folder = folder.path
    log.warning("run %s interrupted %s (SIGINT)", folder.path, stopped.where)
    if tracker is not None:
        tracker.finish(exit_code=EXIT_INTERRUPTED)
    return stopped


def _close(watch: ClusterWatch | None, groups: dict[str, Any], reuse: GroupPool | None,
           kept: dict[str, str], folder: RunFolder, finished: bool) -> None:
    """Hand the groups on (or shut them down) and release the folder; when the local cluster
    ended under the run, ending the process is what is left (a shutdown would block on the
    dead GCS)."""
    if watch is not None and (lost := watch.close()) is not None:
        _cluster_lost(lost, folder, finished)
    release_groups(groups, reuse, kept)
    folder.release_lock()


def _cluster_lost(kind: str, folder: RunFolder, finished: bool) -> None:
    """The run's local Ray cluster ended under it: one line, and the process ends now (Ray
    would end it in 60 s, exit 1, with no word on going on); exit 0 when the run had finished.
    What the stages recorded is whole (files are written atomically), as after a SIGKILL."""
    if finished:
        line = f"(the run's Ray cluster stopped as the run ended: its {kind} exited)"
    else:
        line = (f"error: the run's local Ray cluster stopped (its {kind} process ended); the "
                f"stages recorded so far are kept\n  to continue: selftrain run --resume "
                f"{folder.path}")
    log.error("%s", line)
    print(line, file=sys.stderr, flush=True)
    sys.stdout.flush()
    for handler in logging.getLogger().handlers:
        handler.flush()
    folder.release_lock()
    os._exit(0 if finished else 1)


def _say(line: str) -> None:
    """A main event of the run: on the terminal and in the run's log."""
    console.print(line, highlight=False, soft_wrap=True)
    log.info(line)


def _bad_input() -> tuple[type[BaseException], ...]:
    """Errors that mean the input must change (exit 2), not that the run failed."""
    from selftrain.cluster.groups import SchedulingError
    from selftrain.config import ConfigError
    from selftrain.loop.resume import ResumeError
    from selftrain.registry import RegistryError

    return ConfigError, RegistryError, ResumeError, SchedulingError


def _prepare_folder(cfg: Config, label: str, folder: RunFolder, base: str,
                    budget: BudgetTarget | None) -> None:
    """config.yaml and the run's identity in the manifest (with the changes a resume made under
    --allow-config-change, from the round they first shape)."""
    record_config_changes(folder, cfg)
    atomic_write_bytes(folder.path / "config.yaml", dump_yaml(cfg).encode())
    folder.publish([folder.path / "config.yaml"])
    meta: dict[str, Any] = dict(experiment=cfg.experiment, arm=label, seed=cfg.seed,
                                base_model=base)
    if budget is not None:  # relative: the two folders move together
        meta["budget_from"] = os.path.relpath(budget.folder, folder.path)
    folder.set_meta(**meta)


def _fitting_queries(cfg: Config, task: Task, folder: RunFolder, base: str,
                     prompts: PromptFormat) -> tuple[list[Query], list[Query], dict[str, int]]:
    """Pool, test split and the skipped counts: the run's queries as the policy sees them: those whose prompt leaves room for
    `max_new_tokens` in the model's context (the others are skipped, counted, said once)."""
    from transformers import AutoConfig

    tokenizer = prompts.tokenizer
    context = int(getattr(AutoConfig.from_pretrained(base), "max_position_embeddings", 1 << 30))
    pool, skipped_pool = _fitting(prompts.queries(task, task.queries("train")), tokenizer,
                                  context, cfg)
    test, skipped_test = _fitting(prompts.queries(task, task.queries("test")), tokenizer,
                                  context, cfg)
    skipped = {"pool": skipped_pool, "test": skipped_test}
    if skipped_pool or skipped_test:
        console.print(f"[yellow]skipped {skipped_pool} pool and {skipped_test} test queries "
                      f"whose prompt + {cfg.rollout.max_new_tokens} new tokens exceed the "
                      f"model's context of {context} tokens[/]")
        folder.set_meta(skipped_prompts=skipped)
    return pool, test, skipped


def _fitting(queries: list[Query], tokenizer, context: int,
             cfg: Config) -> tuple[list[Query], int]:
    lengths = [len(ids) for ids in tokenizer([q.prompt for q in queries],
                                             add_special_tokens=False)["input_ids"]]
    keep = [q for q, n in zip(queries, lengths) if n + cfg.rollout.max_new_tokens <= context]
    return keep, len(queries) - len(keep)


@contextmanager
def _run_log(folder: RunFolder) -> Iterator[Path]:
    """The run's log file: selftrain's messages, library warnings and, on failure, every
    traceback; none of it on the terminal (warnings of libraries are not the user's business)."""
    path = folder.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)  # the run's main events (start, stages, end), not only failures
    logging.captureWarnings(True)
    log.info("%s pid %d: %s", "run", os.getpid(), " ".join(sys.argv))
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        log.setLevel(level)
        root.removeHandler(handler)
        handler.close()
        folder.publish([path])
