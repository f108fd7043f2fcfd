"""Histograms for GSI-style tail analysis in reports (plain lists, JSON-ready).

- `length_histogram`: are accepted completions shorter than the task's reference solutions?
  Self-training tends to keep short, easy solutions; a shift to the left is one face of the tail
  loss. Length is in characters: tokenizer-free, so it compares across policies and tasks.
- `correct_per_query`: how many queries got 0, 1, ..., K correct first-pass samples; the mass
  at 0 is the tail that rejection sampling cannot train on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def length_histogram(
    completions: Sequence[str], references: Sequence[str], bins: int | Sequence[float] = 20
) -> dict[str, list[float] | list[int]]:
    """Character-length counts of `completions` and `references` over shared bin edges.

    bins: a number of equal bins spanning both sets, or explicit increasing edges. Lengths
    outside explicit edges are counted in the first or last bin, so counts always sum to the
    number of texts. Returns {"edges": [...], "completions": [...], "references": [...]}.
    """
    comp = np.array([len(t) for t in completions], dtype=np.float64)
    ref = np.array([len(t) for t in references], dtype=np.float64)
    if isinstance(bins, int):
        edges = np.histogram_bin_edges(np.concatenate([comp, ref]), bins=bins)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins must be >= 2 increasing edges, got {list(bins)}")

    def counts(lengths: np.ndarray) -> list[int]:
        return np.histogram(np.clip(lengths, edges[0], edges[-1]), bins=edges)[0].tolist()

    return {"edges": edges.tolist(), "completions": counts(comp), "references": counts(ref)}


def correct_per_query(samples: pd.DataFrame, num_samples: int) -> list[int]:
    """Entry c = number of queries with exactly c correct first-pass samples, c = 0..K.

    Only first-pass rows (origin == "sample") count; queries without any such row are absent.
    """
    first_pass = samples[samples["origin"] == "sample"]
    correct = first_pass.groupby("query_id")["correct"].sum().astype(int)
    if len(correct) and correct.max() > num_samples:
        query = correct.idxmax()
        raise ValueError(
            f"query {query!r} has {correct.max()} correct first-pass samples, more than "
            f"num_samples (K) = {num_samples}"
        )
    return np.bincount(correct.to_numpy(), minlength=num_samples + 1).tolist()
