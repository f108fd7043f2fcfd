"""Failures told as their cause: who raised what, in which round and stage, never Ray's wrapping.

A worker turns any exception of the code it hosts (critic, task, retriever, backend) into a
`WorkerError` naming it; Ray carries that to the driver inside its own error types, which
`cause_of` unwraps. The driver's stage helper adds round and stage (`StageError`), and the run
writes the full tracebacks to its log file and raises `RunFailed`, which the CLI prints as a
few short lines with the command that continues the run.
"""

from __future__ import annotations

import traceback
from pathlib import Path

EXIT_INTERRUPTED = 130
"""Exit code of a run stopped by Ctrl-C (128 + SIGINT), as shells report it."""


class WorkerError(RuntimeError):
    """An exception inside a worker: `who` raised `message`; `details` is its traceback."""

    def __init__(self, who: str, message: str, details: str = "") -> None:
        super().__init__(f"{who}: {message}")
        self.who, self.message, self.details = who, message, details

    def __reduce__(self):  # Ray pickles exceptions to carry them to the driver
        return WorkerError, (self.who, self.message, self.details)

    @classmethod
    def from_exception(cls, who: str, err: BaseException) -> WorkerError:
        if isinstance(err, WorkerError):
            return err
        return cls(who, describe(err), "".join(traceback.format_exception(err)))


class StageError(RuntimeError):
    """Stage `stage` of round `round` failed because of `cause`."""

    def __init__(self, round: int, stage: str, cause: BaseException) -> None:
        self.round, self.stage, self.cause = round, stage, cause_of(cause)
        super().__init__(f"round {round}, stage {stage}: {describe(self.cause)}")


class RunFailed(RuntimeError):
    """A run stopped on an error; the traceback is in `log_path`, the run folder is `folder`."""

    def __init__(self, summary: str, folder: Path, log_path: Path) -> None:
        super().__init__(summary)
        self.summary, self.folder, self.log_path = summary, folder, log_path


def cause_of(err: BaseException) -> BaseException:
    """The exception that started it all: Ray's task, actor and train errors unwrapped."""
    from ray.exceptions import RayError

    seen = set()
    while id(err) not in seen and type(err).__module__.startswith("ray"):
        seen.add(id(err))
        inner = getattr(err, "cause", None) if isinstance(err, RayError) else None
        inner = inner or err.__cause__ or err.__context__
        if not isinstance(inner, BaseException):
            return err
        err = inner
    return err


def describe(err: BaseException) -> str:
    """One line: `WorkerError`s as they were told, others as `Type: message`."""
    err = cause_of(err)
    if isinstance(err, (WorkerError, StageError)):
        return str(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def full_report(err: BaseException) -> str:
    """Every traceback behind `err`, the worker's included: what the log file gets."""
    parts = ["".join(traceback.format_exception(err))]
    cause = err.cause if isinstance(err, StageError) else cause_of(err)
    details = getattr(cause, "details", "")
    if details:
        parts.append(f"--- in the worker ---\n{details}")
    return "\n".join(parts)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run: where (round and stage, when inside one) and which run
    folder, so the CLI can say in one line how to continue. Nothing of the interrupted stage is
    recorded: a stage is recorded only after all its files are written."""

    def __init__(self, round: int | None = None, stage: str | None = None,
                 folder: Path | None = None) -> None:
        super().__init__(round, stage)
        self.round, self.stage, self.folder = round, stage, folder

    @property
    def where(self) -> str:
        if self.stage is None:
            return "while the run was starting" if self.round is None else f"round {self.round}"
        return f"in round {self.round}, stage {self.stage}"
