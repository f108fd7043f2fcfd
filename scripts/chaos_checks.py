"""What a chaos trial's run folder must hold once the run is finished: the undisturbed
reference run's files (every parquet file, every round's metrics.json but its `time/*` seconds),
a manifest `selftrain verify` finds intact, and one offline wandb run that logged each round once
and finished with exit code 0."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the reader of wandb's offline run files
from wandb_files import exit_code, history, run_files  # noqa: E402


def parquets(run: Path) -> list[str]:
    """The run's parquet files, relative to the run folder (wandb's own files aside)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.parquet")
                  if "wandb" not in p.relative_to(run).parts)


def same_files(run: Path, ref: Path) -> list[str]:
    """Where `run` differs from `ref`: parquet files (set and content) and metrics."""
    problems = []
    got, want = parquets(run), parquets(ref)
    if got != want:
        problems.append(f"parquet files differ: extra {sorted(set(got) - set(want))}, "
                        f"missing {sorted(set(want) - set(got))}")
    for rel in sorted(set(got) & set(want)):
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(run / rel), pd.read_parquet(ref / rel))
        except AssertionError as err:
            problems.append(f"{rel} differs: {str(err).splitlines()[0]}")
    rounds = sorted(p.parent.name for p in ref.glob("round_*/metrics.json"))
    for name in rounds:
        path = run / name / "metrics.json"
        if not path.is_file():
            problems.append(f"{name}/metrics.json is missing")
            continue
        a, b = _figures(path), _figures(ref / name / "metrics.json")
        bad = sorted(k for k in set(a) | set(b) if not _close(a.get(k), b.get(k)))
        if bad:
            problems.append(f"{name}/metrics.json differs in {bad[:6]}"
                            + (f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""))
    return problems


def _figures(path: Path) -> dict:
    """A round's metrics without the stage seconds (`time/*`, the only timing keys)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("time/")}


def _close(a, b) -> bool:
    """Equal, floats within 1e-6 (relative, as the tests' `assert_same_rounds`, or absolute):
    a resumed process embeds the texts of the diversity figures in other batches than an
    undisturbed one (its embedding cache starts empty), and float32 cosines move
    `eval_embed_div_passing` (1 - mean cosine, ~0.015) by 2e-8 (measured)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def verified(run: Path) -> list[str]:
    """`selftrain verify RUN` (every recorded file re-hashed) says ok."""
    done = subprocess.run([sys.executable, "-m", "selftrain", "verify", str(run)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return []
    return [f"verify (exit {done.returncode}): {(done.stdout + done.stderr).strip()[-300:]}"]


def wandb_once(run: Path, rounds: int) -> list[str]:
    """One offline wandb run (what `wandb sync` uploads), finished with exit code 0, that
    logged the figures of round 0..rounds once each."""
    files = run_files(run)
    if len(files) != 1:
        return [f"{len(files)} offline wandb runs in {run / 'wandb'} (want 1)"]
    problems = []
    code = exit_code(files[0])
    if code != 0:
        problems.append(f"the wandb run finished with exit code {code}")
    logged = [row.get("round") for row in history(files[0]) if "pass@1" in row]
    if logged != list(range(rounds + 1)):
        problems.append(f"wandb logged rounds {logged} (want {list(range(rounds + 1))})")
    return problems


def check_run(run: Path, ref: Path, rounds: int) -> list[str]:
    """Every problem of a finished trial's run folder (empty: it passed)."""
    if not (run / "manifest.json").is_file():
        return [f"no manifest.json in {run}"]
    return same_files(run, ref) + verified(run) + wandb_once(run, rounds)
