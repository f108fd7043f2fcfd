"""Metric functions (docs/metrics.md): pure functions over run-folder DataFrames.

The same code computes a round's metrics in the loop, recomputes them from parquet in tests and
feeds reports. An undefined figure is returned as None (JSON null), never NaN.
"""

from selftrain.metrics.diversity import DIVERSITY_METRICS, diversity_metrics
from selftrain.metrics.embed import Embedder
from selftrain.metrics.histograms import correct_per_query, length_histogram
from selftrain.metrics.outcome import outcome_metrics, pass_at_k, score_metrics
from selftrain.metrics.search import answer_metrics, search_metrics
from selftrain.metrics.tail import tail_metrics

__all__ = [
    "DIVERSITY_METRICS",
    "Embedder",
    "answer_metrics",
    "correct_per_query",
    "diversity_metrics",
    "length_histogram",
    "outcome_metrics",
    "score_metrics",
    "pass_at_k",
    "search_metrics",
    "tail_metrics",
]
