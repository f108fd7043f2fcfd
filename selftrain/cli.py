"""`selftrain` command line: run one arm, compare arms, verify a run folder."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from selftrain.config import ConfigError, load_config

EXIT_USAGE = 2

EPILOG = """\
overrides are dotted keys: rounds=2 rollout.num_samples=8 critic.name=noisy
exit codes: 0 ok, 1 a run failed, 2 bad input (config, model, critic, run folder in use)"""
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selftrain",
        description="Multi-round self-training loops (rejection sampling, critique-in-loop) on Ray.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _experiment_command(
        sub, "run", "run one arm (the config's arm.name) for `rounds` rounds after round 0",
        "Run one arm of a self-training experiment; writes "
        "<run_root>/<experiment>/<arm>/seed<seed>/.",
        config="YAML experiment config (configs/*.yaml)", overrides="e.g. rounds=2",
        resume=("RUN_DIR", "continue the run in RUN_DIR (a folder or an s3://… URI) from its "
                           "last finished stage"),
        overwrite="delete an existing run folder of the same experiment/arm/seed first")
    run = sub.choices["run"]
    run.add_argument("--label", help="the arm's folder name (default: arm.name), e.g. rs_budget")
    run.add_argument("--budget-from", metavar="RUN_DIR",
                     help="budget matching: draw samples until each round's generated tokens "
                          "reach those of the run in RUN_DIR (waits for its rounds)")
    _experiment_command(
        sub, "compare", "run several arms (x seeds) on the same base model and pools; compare them",
        "Run every arm of the config's `arms:` section (overrides on top of the shared config) "
        "for every seed of `seeds`, then state the arms' differences with bootstrap intervals "
        "and write report.md.",
        config="YAML comparison config with an `arms:` section",
        overrides="applied to every arm", overwrite="start every arm over",
        resume=("EXPERIMENT_DIR", "continue every run under <run_root>/<experiment>"))
    sub.choices["compare"].add_argument("--no-report", action="store_true",
                                        help="skip report.md at the end")
    _other_commands(sub)
    return parser


def _experiment_command(sub, name: str, help: str, description: str, *, config: str,
                        overrides: str, resume: tuple[str, str], overwrite: str) -> None:
    """`run` and `compare`: a config, key=value overrides, --resume and --overwrite."""
    cmd = sub.add_parser(name, help=help, description=description, epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("config", nargs="?", help=config)
    cmd.add_argument("overrides", nargs="*", help=f"key=value overrides, {overrides}")
    cmd.add_argument("--resume", metavar=resume[0], help=resume[1])
    cmd.add_argument("--overwrite", action="store_true", help=overwrite)
    cmd.add_argument("--allow-config-change", action="store_true",
                     help="with --resume: let key=value change settings the recorded rounds were "
                          "made with (the manifest records from which round); without it only "
                          "rounds (to extend), tracking.*, ray.*, run_root may change")


def _other_commands(sub) -> None:
    """verify, report, serve-retriever, train-critic."""
    ver = sub.add_parser("verify", help="check a run folder against its manifest",
                         description="Re-hash every file recorded in manifest.json; name any "
                                     "missing, truncated or altered file. Exit 1 when any.")
    ver.add_argument("run_dir", help="a run folder (…/<arm>/seed<s>) or an experiment folder")

    rep = sub.add_parser("report", help="write report.md with figures from run folders",
                         description="Read run folders (run, experiment or root folders) and "
                                     "write report.md with PNG figures.")
    rep.add_argument("run_dirs", nargs="+", help="run folders or folders above them")
    rep.add_argument("--out", help="output folder (default: <first path>/report)")

    srv = sub.add_parser("serve-retriever",
                         help="serve a BM25 index over the Search-R1 retrieval API (POST /retrieve)",
                         description="Serve a JSONL corpus (id, title, text) with BM25 over "
                                     "HTTP so rollout workers on many nodes share one retriever.")
    srv.add_argument("corpus", help="JSONL corpus with id, title, text per line")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.add_argument("--cache-dir", help="where the BM25 index is cached (default: beside corpus)")

    tc = sub.add_parser("train-critic",
                        help="train the prm and lm critics from oracle-labelled base-policy samples",
                        description="Sample the base policy, label every step with the task's "
                                    "oracle critic, train the prm and lm critics, and report their "
                                    "step-level precision/recall/F1 against the oracle.")
    tc.add_argument("config", help="YAML config (its task, model and critic_train sections)")
    tc.add_argument("overrides", nargs="*", help="key=value overrides")
    tc.add_argument("--out", help="output folder (default: <run_root>/<experiment>/critics)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `compare cfg.yaml --overwrite rounds=2`: overrides after a flag end up in `extra`
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model-loading bars: noise
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Generating train split"
    # Each selftrain process starts its own wandb service: one inherited from a parent process
    # may still hold the stream of a killed run, and a resume of that run would be refused.
    os.environ.pop("WANDB_SERVICE", None)
    # `critic.path: my_critics:MyCritic` with my_critics.py in the current folder, as
    # `python -m` would find it (last on the path, so it never shadows an installed package)
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as err:  # Ctrl-C: one line, where it stopped and how to go on
        return _report_interrupt(err, args)
    except Exception as err:  # every error ends as a few lines for a person
        return _report_error(err, args)


def _report_interrupt(err: KeyboardInterrupt, args: argparse.Namespace) -> int:
    """`interrupted in round k, stage s; continue with: selftrain run --resume DIR` (exit 130).
    The resume hint only for a folder that holds a config to resume from."""
    from selftrain.errors import EXIT_INTERRUPTED, Interrupted

    folder = err.folder if isinstance(err, Interrupted) else None
    where = f" {err.where}" if isinstance(err, Interrupted) else ""
    if folder is not None and args.command == "compare":
        where = f" (run {folder.parent.name}/{folder.name}){where}"
        folder = folder.parents[1]
    elif folder is None and args.command == "compare":
        folder = getattr(args, "exp_dir", None)
    config = "config.yaml" if args.command == "run" else "compare.yaml"
    hint = (f"; continue with: selftrain {args.command} --resume {folder}"
            if folder is not None and (Path(folder) / config).is_file() else "")
    print(f"interrupted{where}{hint}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _report_error(err: Exception, args: argparse.Namespace) -> int:
    """Print what went wrong in a few lines (never a traceback) and return the exit code:
    2 for bad input, 1 for a run that failed (its traceback is in the run's log file)."""
    from selftrain.cluster.groups import SchedulingError
    from selftrain.errors import RunFailed
    from selftrain.experiments.launcher import RunsFailed
    from selftrain.loop.resume import ResumeError
    from selftrain.registry import RegistryError
    from selftrain.runfolder.folder import ManifestError, RunLockedError

    bad_input = (ConfigError, FileExistsError, FileNotFoundError, RegistryError,
                 RunLockedError, SchedulingError, ManifestError, ResumeError)
    if isinstance(err, bad_input):
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(err, RunFailed):
        where = err.folder if args.command == "run" else err.folder.parents[1]
        resumable = (where / ("config.yaml" if args.command == "run" else "compare.yaml")).is_file()
        hint = (f"\n  to continue after fixing it: selftrain {args.command} --resume {where}"
                if resumable else "\n  nothing was recorded yet: run the same command again")
        print(f"error: {err.summary}\n  full traceback: {err.log_path}{hint}", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(err, RunsFailed):
        print(f"error: {err}\n  to continue after fixing them: selftrain compare --resume "
              f"{err.exp_dir}", file=sys.stderr)
        return EXIT_FAILED
    log = _crash_log(err)
    print(f"error: {type(err).__name__}: {err}\n  full traceback: {log}", file=sys.stderr)
    return EXIT_FAILED


def _crash_log(err: Exception) -> Path:
    """A traceback from outside any run folder goes to a file of its own."""
    import traceback

    path = Path(tempfile.gettempdir()) / f"selftrain-error-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(err)))
    return path


def _load(args: argparse.Namespace, what: str):
    if args.resume:
        from selftrain.loop.config_change import check_resume_config

        config_path = _resume_config(args.resume, what)
        cfg = load_config(config_path, args.overrides + ([args.config] if args.config else []))
        check_resume_config(load_config(config_path), cfg, args.resume, args.allow_config_change)
        return relocate(cfg, args.resume, what)
    if not args.config:
        raise ConfigError(f"selftrain {what}: give a CONFIG file (or --resume RUN_DIR)")
    return load_config(args.config, args.overrides)


def _resume_config(where: str, what: str) -> Path:
    """The resolved config of the folder to resume: a path, or a URI (run_root on S3)."""
    from selftrain.runfolder.storage import child, is_uri, read_uri

    # an experiment folder: compare.yaml holds the shared sections and the arms
    name = "config.yaml" if what == "run" else "compare.yaml"
    config = Path(where) / name
    if is_uri(where):
        data = read_uri(child(where, name))
        if data is not None:
            config = Path(tempfile.mkdtemp(prefix="selftrain-resume-")) / name
            config.write_bytes(data)
    if not config.is_file():
        raise FileNotFoundError(f"--resume {where}: no {name} there; is it a "
                                f"{'run' if what == 'run' else 'compare experiment'} folder?")
    return config


def relocate(cfg, where: str, what: str):
    """The config of a resumed folder, pointed at that folder wherever it lives now (it may
    have been copied or moved since it was written): run_root and experiment come from the
    path, `<run_root>/<experiment>/<arm>/seed<s>` for a run, `<run_root>/<experiment>` for a
    compare experiment. A staging folder stands for its object-storage URI, which stays."""
    from selftrain.config import apply_overrides
    from selftrain.runfolder.storage import is_uri, split_query

    if is_uri(cfg.run_root) and not is_uri(where):
        return cfg
    base, query = split_query(where) if is_uri(where) else (str(Path(where).resolve()), "")
    depth = 3 if what == "run" else 1
    parts = base.rstrip("/").rsplit("/", depth)
    shape = "<run_root>/<experiment>/<arm>/seed<s>" if what == "run" else "<run_root>/<experiment>"
    if len(parts) <= depth or (what == "run" and parts[3] != f"seed{cfg.seed}"):
        raise ConfigError(f"--resume {where}: expected a folder {shape} (its config.yaml says "
                          f"seed {cfg.seed})")
    return apply_overrides(cfg, {"run_root": parts[0] + query, "experiment": parts[1]},
                           f"--resume {where}")


def _resume_label(where: str) -> str:
    """The arm label of a resumed run folder: the name of the folder above seed<s>."""
    from selftrain.runfolder.storage import is_uri, split_query

    base = split_query(where)[0] if is_uri(where) else str(Path(where).resolve())
    return base.rstrip("/").rsplit("/", 2)[1]


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args, "run")
    if cfg.arms:
        raise ConfigError(f"{args.config or args.resume}: has an `arms:` section ("
                          f"{', '.join(cfg.arms)}), so it is a compare config: run its arms with "
                          f"`selftrain compare {args.config or 'CONFIG'}`; `selftrain run` "
                          f"would ignore them")
    from selftrain.loop.checks import preflight
    from selftrain.loop.driver import run_arm
    from selftrain.runfolder.budget import BudgetTarget

    preflight(cfg, "run")
    label = _resume_label(args.resume) if args.resume else (args.label or default_label(cfg))
    budget = BudgetTarget(args.budget_from) if args.budget_from else None
    run_arm(cfg, label, resume=bool(args.resume), overwrite=args.overwrite, budget=budget)
    return 0


def default_label(cfg) -> str:
    """A run's folder name when none is given: the filter, then the sampling and selection
    when they are not the plain ones (rs, rs_balanced, critique_distinct_diverse)."""
    arm = cfg.arm
    parts = [arm.name] + [v for v, plain in ((arm.sampling, "fixed"), (arm.selection, "all"))
                          if v != plain]
    return "_".join(parts)


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = _load(args, "compare")
    from selftrain.experiments.compare import run_compare
    from selftrain.runfolder.storage import storage_for

    args.exp_dir = storage_for(cfg.run_root, cfg.staging_dir).local_root / cfg.experiment
    run_compare(cfg, resume=bool(args.resume), overwrite=args.overwrite,
                report=not args.no_report)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from selftrain.runfolder.folder import verify

    root = Path(args.run_dir)
    folders = sorted(p.parent for p in root.rglob("manifest.json")) if root.is_dir() else []
    if not folders:
        print(f"error: no manifest.json under {root}", file=sys.stderr)
        return EXIT_USAGE
    bad = 0
    for folder in folders:
        problems = verify(folder)
        bad += len(problems)
        print(f"{folder}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  - {p}")
    return 1 if bad else 0


def cmd_report(args: argparse.Namespace) -> int:
    from selftrain.report import report_main

    return report_main(args.run_dirs, args.out)


def cmd_serve_retriever(args: argparse.Namespace) -> int:
    from selftrain.retrieval import serve_main

    serve_main(args.corpus, host=args.host, port=args.port, cache_dir=args.cache_dir)
    return 0


def cmd_train_critic(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    from critics import build_critic
    from selftrain.critic_training import train_critics
    from selftrain.models.source import resolve_model
    from selftrain.tasks import build_task

    task = build_task(cfg.task.name, cfg.task.path, cfg.task.args)
    oracle = build_critic(cfg.critic_train.oracle or f"{cfg.task.name}-oracle", None, {}, task)
    out = Path(args.out) if args.out else Path(cfg.run_root) / cfg.experiment / "critics"
    result = train_critics(cfg, out, base_model_path=str(resolve_model(cfg, task)), task=task,
                           oracle=oracle)
    for name in ("prm", "lm"):
        m = result.get(name, {})
        print(f"{name}: precision {m.get('precision')}, recall {m.get('recall')}, "
              f"F1 {m.get('f1')} (flagged steps vs the oracle)")
    print(f"written {out}")
    return 0


COMMANDS = {"run": cmd_run, "compare": cmd_compare, "verify": cmd_verify, "report": cmd_report,
            "serve-retriever": cmd_serve_retriever, "train-critic": cmd_train_critic}

if __name__ == "__main__":
    sys.exit(main())
