"""The compute of a round, as plain classes: Ray wraps them in `groups.ActorGroup`.

Each class can be built and called in-process (tests, a debugger, the GPU check) exactly as the
actors run it. Workers are created once per run and kept across rounds; the rollout worker
swaps in each round's checkpoint instead of being re-created.

Work arrives as typed chunks through one method, `run(chunk)`. An exception of the code a
worker hosts (critic, task, retriever, backend) leaves it as a `WorkerError` that names who
raised it, so the driver can tell the user the cause rather than Ray's wrapping of it.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from critics import build_critic, checked
from selftrain.backends import Generation, SamplingConfig, make_backend
from selftrain.config import CriticConfig, TaskConfig
from selftrain.device import configure_threads
from selftrain.errors import WorkerError
from selftrain.heap import heap_info, settle_heap
from selftrain.runfolder.storage import LocalStorage, Storage
from selftrain.tasks import build_task
from selftrain.types import Critique, CritiqueRequest


@dataclass
class GenerateChunk:
    """Prompts to sample, with the chunk's own seed and the policy to sample from."""

    prompts: list[str]
    params: SamplingConfig
    seed: int
    weights: str
    episodes: bool = False
    """Agent tasks: multi-turn episodes with the task's environment, not one generation."""
    prefixes: list[list[str]] | None = None
    """Episodes only: policy turns to replay before the policy continues (resume refinement)."""


@dataclass
class CritiqueChunk:
    """Samples to critique."""

    requests: list[CritiqueRequest]


class RolloutWorker:
    """Holds one policy behind a generation backend (and, for agent tasks, the environment)."""

    def __init__(self, *, model_path: str, backend: str, backend_args: dict[str, Any],
                 num_cpus: float | None = None, task: TaskConfig | None = None,
                 storage: Storage | None = None) -> None:
        configure_threads(num_cpus)
        self.backend = make_backend(backend, model_path, **backend_args)
        self.weights = self.base = model_path
        self.task_spec = task  # the driver's spec: agent tasks build their environment from it
        self.storage = storage or LocalStorage(".")
        self._env = None
        self.chunks: deque[dict[str, Any]] = deque(maxlen=4096)
        settle_heap()  # the model and its libraries stay: no full collection walks them again

    def reset(self) -> None:
        """What a fresh worker holds, for the next run of a sequential compare that takes this
        one over (`selftrain.loop.run_groups`): the base weights, no environment, no clock."""
        self._use(self.base)
        self._env = None
        self.chunks.clear()

    def run(self, chunk: GenerateChunk) -> list[list[Generation]]:
        """`params.n` generations per prompt, in prompt order."""
        spec = self.task_spec
        who = f"rollout worker (task {spec.path or spec.name if spec else None!r})"
        try:
            if chunk.episodes:
                return self.rollout(chunk.prompts, chunk.params, chunk.seed, chunk.weights,
                                    chunk.prefixes)
            return self.generate(chunk.prompts, chunk.params, chunk.seed, chunk.weights)
        except Exception as err:
            raise WorkerError.from_exception(who, err) from None

    def _use(self, weights: str) -> None:
        """Load the policy at `weights` unless this worker holds it already (a restarted actor
        comes back with the base weights and catches up here). When the run lives on object
        storage, a checkpoint written on another node is downloaded first."""
        if weights != self.weights:
            self.backend.load_weights(self.storage.ensure_local(weights))
            self.weights = weights

    def rollout(self, prompts: list[str], params: SamplingConfig, seed: int, weights: str,
                prefixes: list[list[str]] | None = None) -> list[list[Generation]]:
        """Multi-turn agent episodes, `params.n` per prompt, all advancing together.

        `prefixes` (refinement in resume mode) are the policy turns to replay before the
        policy continues; their observations are recomputed by the environment.
        """
        from selftrain.agent import replay, run_episodes

        self._use(weights)
        if self._env is None:
            spec = self.task_spec or TaskConfig()
            self._env = build_task(spec.name, spec.path, spec.args).env()
        env = self._env
        expanded = [p for p in prompts for _ in range(params.n)]
        starts = None
        if prefixes is not None:
            starts = replay(expanded, [pre for pre in prefixes for _ in range(params.n)],
                            env.retriever, env.topk)
        turn_params = replace(params, n=1)
        context = self.backend.max_context()
        calls = [0]

        def one_turn(contexts: list[str]) -> list[tuple[str, int] | None]:
            calls[0] += 1  # a fresh, reproducible seed for every turn of the batch
            lengths = self.backend.count_tokens(contexts)
            live = [i for i, n in enumerate(lengths) if n + params.max_new_tokens <= context]
            outs = self.backend.generate([contexts[i] for i in live], turn_params,
                                         seed + 7919 * calls[0])
            result: list[tuple[str, int] | None] = [None] * len(contexts)
            for i, out in zip(live, outs):
                result[i] = (out[0].text, out[0].num_tokens)
            return result

        trajs = run_episodes(expanded, one_turn, env.retriever, env.max_turns, env.topk,
                             starts=starts)
        gens = [Generation(text=t.completion, num_tokens=t.num_tokens,
                           finish_reason=t.stop_reason or "length",
                           masked_spans=list(t.masked_spans)) for t in trajs]
        return [gens[i : i + params.n] for i in range(0, len(gens), params.n)]

    def generate(self, prompts: list[str], params: SamplingConfig, seed: int,
                 weights: str) -> list[list[Generation]]:
        """Generate with the policy at `weights`, loading it first if this worker holds another."""
        start = time.perf_counter()
        self._use(weights)
        loaded = time.perf_counter()
        out = self.backend.generate(prompts, params, seed)
        self.chunks.append({"seed": seed, "weights": weights, "prompts": len(prompts),
                            "weight_load": loaded - start,
                            "compute": time.perf_counter() - loaded})
        return out

    def clock(self) -> list[dict[str, Any]]:
        """The latest chunks' seconds (weight load, compute), by chunk seed: a benchmark
        attributes them to stages, since every stage's chunk seeds are known."""
        return list(self.chunks)

    def info(self) -> dict[str, Any]:
        import torch

        return {"pid": os.getpid(), "node": _node_id(), "weights": self.weights,
                "torch_threads": torch.get_num_threads(), **heap_info()}


class CriticWorker:
    """Holds one critic (built from the config's critic section) for the run."""

    def __init__(self, *, critic: CriticConfig, task: TaskConfig,
                 num_cpus: float | None = None) -> None:
        configure_threads(num_cpus)
        self.specs = critic, task
        self.reset()
        settle_heap()

    def reset(self) -> None:
        """A fresh task and critic (a critic may keep state between calls): at start, and for
        the next run of a sequential compare that takes this worker over."""
        critic, task = self.specs
        self.task = build_task(task.name, task.path, task.args)
        self.critic = build_critic(critic.name, critic.path, critic.args, self.task)

    def run(self, chunk: CritiqueChunk) -> list[Critique]:
        """One critique per request, held to the critic protocol (`critics.checked`)."""
        try:
            return checked(self.critic, chunk.requests)
        except Exception as err:
            raise WorkerError.from_exception(f"critic {self.critic.name!r}", err) from None

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": _node_id(), "critic": self.critic.name}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # info only
        return None
