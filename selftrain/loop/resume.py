"""Before a resumed run starts Ray: are the recorded files it will read still intact?

A resumed run reads back, of the rounds it has finished, only their figures (metrics.json and
the histograms and examples it logs again), round 0's levels, and what the next finetune starts
from (the last training set and checkpoint); of the round it was in, every recorded file. Each
is checked as `selftrain verify` does (size, sha256; sizes for checkpoints).

A damaged file of the round the run was in is redone: that file's stage and every stage after
it in the round are forgotten, which `--resume` says in one line. A damaged file that a later
round already built on cannot be redone without redoing that round, so the resume stops with
one line naming the file. Nothing recorded and intact is rewritten.
"""

from __future__ import annotations

from selftrain.config import Config
from selftrain.runfolder.folder import RunFolder
from selftrain.tracking import console
from selftrain.train.objectives import make_objective

FIGURES = ("metrics.json", "histograms.json", "examples.json")


class ResumeError(ValueError):
    """A file the resumed run needs is damaged and cannot be redone."""


def check_recorded_files(folder: RunFolder, cfg: Config) -> None:
    rounds = folder.recorded_rounds()
    if not rounds:
        return
    last = rounds[-1]
    latest = folder.latest_records()
    _redo_damaged(folder, last, latest)
    latest = folder.latest_records()
    needed = _needed_before(folder, cfg, last)
    for rel, (k, _, rec) in sorted(latest.items()):
        if k == last:
            continue
        problem = folder.problem(rel, rec)
        if problem and rel in needed:
            raise ResumeError(
                f"--resume {folder.path}: {problem}; round {last} builds on it, so it cannot be "
                f"redone. `selftrain verify {folder.path}` lists every damaged file; restore it "
                f"or start over with --overwrite")
        if problem:
            console.print(f"[yellow]note: {problem} (not needed to continue; `selftrain verify` "
                          f"lists it)[/]", soft_wrap=True)


def _redo_damaged(folder: RunFolder, k: int, latest: dict) -> None:
    """Forget the stages of round k from the first one whose file is damaged."""
    stages = folder.stages(k)
    first = None
    for rel, (rk, _, rec) in latest.items():
        if rk != k or (problem := folder.problem(rel, rec)) is None:
            continue
        writer = next(s for s in stages if rel in folder.stage_info(k, s).get("files", {}))
        if first is None or stages.index(writer) < stages.index(first[0]):
            first = (writer, problem)
    if first is not None:
        dropped = folder.drop_stages(k, first[0])
        console.print(f"[yellow]resume: {first[1]}; redoing round {k} from stage {first[0]} "
                      f"({', '.join(dropped)})[/]", soft_wrap=True)


def _needed_before(folder: RunFolder, cfg: Config, last: int) -> set[str]:
    """Files of rounds before `last` that the resumed run reads."""
    needed = {f"round_{k}/{name}" for k in folder.recorded_rounds() for name in FIGURES}
    needed.add("round_0/difficulty.json")
    start = last + 1 if folder.is_done(last, "metrics") else last
    if not folder.is_done(start, "finetune") and start >= 1:
        needed.add(f"round_{start - 1}/{make_objective(cfg.train.objective).data_file}")
        if cfg.train.init == "previous" and start >= 2:
            needed.add(f"round_{start - 1}/checkpoint")
    return needed


def finished_history(cfg: Config, folder_path) -> dict[int, dict] | None:
    """The metrics of every round of a run whose manifest records all `cfg.rounds` rounds as
    finished, read without Ray, a model or a tokenizer (a resume of a finished run then takes
    seconds); None when there is something left to run, a recorded file is damaged (`verify`),
    or the record lives on object storage (its staging copy may be behind)."""
    import json

    from selftrain.runfolder.folder import read_manifest, verify
    from selftrain.runfolder.storage import is_uri

    manifest_path = folder_path / "manifest.json"
    if is_uri(cfg.run_root) or not manifest_path.is_file():
        return None
    rounds = read_manifest(manifest_path)["rounds"]
    if not all("metrics" in rounds.get(str(k), {}) for k in range(cfg.rounds + 1)):
        return None
    if verify(folder_path):  # a damaged or missing file: the full resume finds and redoes it
        return None
    return {k: json.loads((folder_path / f"round_{k}" / "metrics.json").read_text())
            for k in range(cfg.rounds + 1)}
