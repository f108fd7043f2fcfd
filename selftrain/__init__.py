"""selftrain: multi-round self-training loops on Ray, with tail-narrowing and diversity metrics."""

__version__ = "0.1.0"
