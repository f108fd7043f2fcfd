"""`selftrain train-critic`: train the `prm` and `lm` critics from oracle-labelled policy samples.

The learned critics must judge what the loop will show them, so their data comes from the base
policy itself: samples of the task's training queries at temperature 1, every step labelled
by an oracle critic. Queries (not samples) are split into train and held-out, so the held-out
figures measure a critic on queries it has never seen. Both critics start from fresh tiny
char-level Llamas (or from the policy, `init: policy`); on held-out samples each is scored
against the oracle on the steps it flags.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from critics import Critic, Critique, CritiqueRequest, build_critic, checked
from critics.prm import PRMExample, PRMTrainSettings, build_prm, save_prm, train_prm
from critics.verdicts import format_prompt, format_verdicts
from selftrain.backends import SamplingConfig
from selftrain.backends.hf import HFBackend
from selftrain.config import CriticTrainConfig, TinyModelConfig, checked_section
from selftrain.device import best_device, single_cpu_thread
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.train.sft import SFTExample, SFTSettings, train_sft
from selftrain.types import Query


@dataclass
class LabelledSample:
    """A policy sample with the oracle's verdict on every step."""

    request: CritiqueRequest
    oracle: Critique
    heldout: bool


def train_critics(
    cfg: Any,
    out_dir: Path,
    *,
    base_model_path: str,
    task: Any,
    settings: CriticTrainConfig | None = None,
    oracle: Critic | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Sample, label, train both critics, evaluate them, write `out_dir/{prm,lm}` and
    `out_dir/critic_eval.json`; return what the json holds.

    `cfg` may be None or an experiment `Config`; from it only `seed` and the `critic_train`
    section are read. Explicit `settings` win over that section; `oracle` (a built critic)
    over `settings.oracle`.
    """
    settings = _resolve_settings(cfg, settings)
    oracle = oracle or build_critic(settings.oracle or f"{task.name}-oracle", None, {}, task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = best_device()
    seconds: dict[str, float] = {}
    start, cpu_start = time.time(), time.process_time()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} · {task.fields[info]}"),
                        TimeElapsedColumn(), console=console)
    with progress, single_cpu_thread(device):
        samples = label_policy_samples(task, oracle, base_model_path, settings, progress, seconds)
        train = [s for s in samples if not s.heldout]
        heldout = [s for s in samples if s.heldout]
        if not train or not heldout:
            raise ValueError(
                f"train-critic: got {len(train)} training and {len(heldout)} held-out samples "
                f"with steps; use more queries or samples (max_queries, num_samples)"
            )
        with _timed(seconds, "prm_train"):
            prm_stats = _train_prm(train, settings, base_model_path, device, out_dir / "prm", progress)
        with _timed(seconds, "lm_train"):
            lm_stats = _train_lm(train, settings, base_model_path, device, out_dir / "lm", progress)
        scores = _evaluate_both(task, heldout, out_dir, settings, progress, seconds)
    seconds["total"] = time.time() - start
    seconds["cpu_total"] = time.process_time() - cpu_start  # all threads: load-independent
    result = {
        "prm": {**scores["prm"], "train": prm_stats, "path": str(out_dir / "prm")},
        "lm": {**scores["lm"], "train": lm_stats, "path": str(out_dir / "lm")},
        "data": _data_summary(samples, oracle.name, base_model_path),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "settings": dataclasses.asdict(settings),
    }
    tmp = out_dir / "critic_eval.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.rename(out_dir / "critic_eval.json")  # atomic: a half-written eval is never read
    return result


def label_policy_samples(task: Any, oracle: Critic, base_model_path: str,
                         settings: CriticTrainConfig, progress: Progress,
                         seconds: dict[str, float]) -> list[LabelledSample]:
    """Policy samples of the task's training queries, every step labelled by `oracle`, a share
    of the queries of each difficulty held out (`settings.heldout_fraction`)."""
    queries = task.queries("train")[: settings.max_queries]
    with _timed(seconds, "sampling"):
        requests = sample_policy(task, queries, base_model_path, settings, progress)
    with _timed(seconds, "labelling"):
        labels = critique_all(oracle, requests, settings.eval_batch_size, progress)
    heldout_ids = _heldout_queries(queries, settings.heldout_fraction, settings.seed)
    return [LabelledSample(r, c, r.query.query_id in heldout_ids) for r, c in zip(requests, labels)]


def _evaluate_both(task: Any, heldout: list[LabelledSample], out_dir: Path,
                   settings: CriticTrainConfig, progress: Progress,
                   seconds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Both trained critics, loaded from `out_dir` as the loop would, scored on `heldout`."""
    requests = [s.request for s in heldout]
    truth = [s.oracle for s in heldout]
    args = {
        "prm": {"model_path": str(out_dir / "prm"), "batch_size": settings.eval_batch_size},
        "lm": {"model_path": str(out_dir / "lm"), "max_new_tokens": _lm_budget(heldout, settings),
               "batch_size": settings.eval_batch_size},
    }
    scores = {}
    for name in ("prm", "lm"):
        with _timed(seconds, f"{name}_eval"):
            critic = build_critic(name, None, args[name], task)
            scores[name] = evaluate_critic(critic, requests, truth, settings.eval_batch_size,
                                           progress)
    return scores


def _data_summary(samples: list[LabelledSample], oracle: str, base_model_path: str) -> dict[str, Any]:
    """What the critics learned from: sizes, and how many steps the oracle flagged."""
    heldout = [s for s in samples if s.heldout]
    steps = [v.ok for s in samples for v in s.oracle.verdicts if v.ok is not None]
    # The F1 of a critic that flags every step, on the held-out steps: the bar to clear.
    held = [v.ok for s in heldout for v in s.oracle.verdicts if v.ok is not None]
    held_flagged = held.count(False) / max(1, len(held))
    return {
        "oracle": oracle,
        "base_model": str(base_model_path),
        "queries": len({s.request.query.query_id for s in samples}),
        "train_samples": len(samples) - len(heldout),
        "heldout_samples": len(heldout),
        "steps": len(steps),
        "flagged_rate": steps.count(False) / max(1, len(steps)),
        "heldout_flagged_rate": held_flagged,
        "always_flag_f1": 2 * held_flagged / (1 + held_flagged),
        "samples_by_difficulty": _count_by_difficulty(samples),
    }


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Wall seconds of the block, into `seconds[key]`."""
    start = time.time()
    yield
    seconds[key] = time.time() - start


def sample_policy(task: Any, queries: list[Query], base_model_path: str,
                  settings: CriticTrainConfig, progress: Progress) -> list[CritiqueRequest]:
    """Policy samples of `queries`, distinct per query, each with at least one step."""
    backend = HFBackend(base_model_path)
    params = SamplingConfig(n=settings.num_samples, temperature=settings.temperature,
                            max_new_tokens=settings.max_new_tokens, stop=tuple(task.stop))
    per_call = max(1, settings.gen_batch_size // settings.num_samples)
    bar = progress.add_task("sampling the policy", total=len(queries), info="queries")
    requests: list[CritiqueRequest] = []
    for start in range(0, len(queries), per_call):
        batch = queries[start : start + per_call]
        gens = backend.generate([q.prompt for q in batch], params, settings.seed + start)
        for query, outs in zip(batch, gens):
            seen = set()
            for j, gen in enumerate(outs):
                steps = task.split_steps(gen.text)
                if steps and gen.text not in seen:
                    seen.add(gen.text)
                    requests.append(CritiqueRequest(f"{query.query_id}-s{j}", query, steps, gen.text))
        progress.update(bar, completed=start + len(batch), info=f"{len(requests)} samples")
    return requests


def critique_all(critic: Critic, requests: list[CritiqueRequest], batch_size: int,
                 progress: Progress | None = None) -> list[Critique]:
    """`checked` critiques of all requests, in batches, with a progress bar."""
    progress = progress or Progress(disable=True)
    bar = progress.add_task(f"critiquing with {critic.name}", total=len(requests), info="samples")
    out: list[Critique] = []
    for start in range(0, len(requests), batch_size):
        out += checked(critic, requests[start : start + batch_size])
        progress.update(bar, completed=len(out))
    return out


def evaluate_critic(critic: Critic, requests: list[CritiqueRequest], truth: list[Critique],
                    batch_size: int, progress: Progress | None = None) -> dict[str, float]:
    """Step-level agreement with the oracle, the flagged (not ok) class being the positive one.

    A step the critic left unknown counts as flagged, as `Critique.first_error` counts it.
    Precision is 0 when nothing is flagged (no NaN in the json). Policy samples are mostly
    wrong, so flagging everything already scores a high F1; `specificity` (ok steps passed)
    and `balanced_accuracy` show whether a critic tells the two apart.
    """
    got = critique_all(critic, requests, batch_size, progress)
    tp = fp = fn = tn = unknown = first_error_hits = tokens = 0
    for pred, gold in zip(got, truth):
        first_error_hits += pred.first_error == gold.first_error
        tokens += pred.tokens
        for p, g in zip(pred.verdicts, gold.verdicts):
            if g.ok is None:
                continue
            unknown += p.ok is None
            flag, wrong = p.ok is not True, not g.ok
            tp += flag and wrong
            fp += flag and not wrong
            fn += wrong and not flag
            tn += not flag and not wrong
    steps = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "accuracy": (tp + tn) / steps if steps else 0.0,
        "specificity": specificity,
        "balanced_accuracy": (recall + specificity) / 2,
        "first_error_accuracy": first_error_hits / max(1, len(got)),
        "unknown_rate": unknown / steps if steps else 0.0,
        "steps": steps,
        "samples": len(got),
        "critic_tokens_per_sample": tokens / max(1, len(got)),
    }


def _train_prm(train: list[LabelledSample], settings: CriticTrainConfig, base_model_path: str,
               device: Any, out: Path, progress: Progress) -> dict[str, float]:
    tokenizer, lm = _start_model(settings, base_model_path)
    model = build_prm(lm.base_model)  # the transformer without its LM head
    examples = [PRMExample(s.request.query.prompt, s.request.steps, [v.ok for v in s.oracle.verdicts])
                for s in train]
    bar = progress.add_task("training prm", total=settings.prm_steps, info="")
    stats = train_prm(
        model, tokenizer, examples,
        PRMTrainSettings(steps=settings.prm_steps, lr=settings.prm_lr,
                         batch_size=settings.prm_batch_size, max_length=settings.max_length,
                         balanced=settings.prm_balanced, seed=settings.seed),
        device, on_step=lambda s, n, loss: progress.update(bar, completed=s, info=f"loss {loss:.3f}"),
    )
    shutil.rmtree(out, ignore_errors=True)
    save_prm(model.cpu(), tokenizer, out, settings.threshold)
    return stats


def _train_lm(train: list[LabelledSample], settings: CriticTrainConfig, base_model_path: str,
              device: Any, out: Path, progress: Progress) -> dict[str, float]:
    """SFT a causal LM on prompt -> the oracle's verdicts in the `lm` critic's format."""
    tokenizer, model = _start_model(settings, base_model_path)
    model = model.to(device)
    examples = [
        SFTExample(prompt=format_prompt(s.request.query.prompt, s.request.steps),
                   completion=format_verdicts(s.oracle.verdicts, settings.max_explanation))
        for s in train
    ]
    sft = SFTSettings(epochs=10_000, lr=settings.lm_lr, batch_size=settings.lm_batch_size,
                      warmup_ratio=0.05, max_length=settings.max_length,
                      max_steps=settings.lm_steps, seed=settings.seed)
    bar = progress.add_task("training lm critic", total=settings.lm_steps, info="")
    stats = train_sft(model, tokenizer, examples, sft, device,
                      on_step=lambda s, n, loss: progress.update(bar, completed=s,
                                                                 info=f"loss {loss:.3f}"))
    shutil.rmtree(out, ignore_errors=True)
    model.cpu().save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    return stats


def _start_model(settings: CriticTrainConfig, base_model_path: str) -> tuple[Any, Any]:
    """(tokenizer, causal LM) a critic starts from, as `settings.init` says."""
    if settings.init == "policy":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base_model_path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, AutoModelForCausalLM.from_pretrained(base_model_path)
    tokenizer = build_char_tokenizer()
    tiny = TinyModelConfig(hidden_size=settings.hidden_size, num_layers=settings.num_layers,
                           num_heads=settings.num_heads,
                           intermediate_size=settings.intermediate_size,
                           max_position_embeddings=max(1024, settings.max_length),
                           seed=settings.seed)
    return tokenizer, build_tiny_llama(tiny, len(tokenizer), tokenizer)


def _lm_budget(samples: list[LabelledSample], settings: CriticTrainConfig) -> int:
    """Tokens enough for a full answer on the longest sample: one worst-case line per step
    (characters are tokens for the char tokenizer the trained critic uses)."""
    most = max(len(s.request.steps) for s in samples)
    return (len(f"Step {most}: incorrect — \n") + settings.max_explanation) * most + 1


def _heldout_queries(queries: list[Query], fraction: float, seed: int) -> set[str]:
    """Query ids held out: the same share of each difficulty, chosen at random with `seed`."""
    by_level: dict[int, list[str]] = defaultdict(list)
    for q in queries:
        by_level[q.difficulty].append(q.query_id)
    out: set[str] = set()
    rng = random.Random(seed)
    for level in sorted(by_level):
        ids = sorted(by_level[level])
        rng.shuffle(ids)
        take = round(fraction * len(ids))
        if 0 < fraction and len(ids) > 1:
            take = min(max(1, take), len(ids) - 1)  # both sides get queries of every level
        out.update(ids[:take])
    return out


def _count_by_difficulty(samples: list[LabelledSample]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in samples:
        counts[str(s.request.query.difficulty)] += 1
    return dict(sorted(counts.items()))


def _resolve_settings(cfg: Any, settings: CriticTrainConfig | None) -> CriticTrainConfig:
    """`settings`, else the config's `critic_train` section, checked as a config file is (so a
    bad value fails before any work); a None seed takes the experiment's."""
    if settings is None:
        settings = cfg.critic_train if cfg is not None else CriticTrainConfig()
    settings = checked_section(settings, "critic_train", "train_critics settings")
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=cfg.seed if cfg is not None else 0)
    return settings
