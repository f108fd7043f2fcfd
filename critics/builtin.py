"""Registers the built-in critics (importing their modules runs the decorators)."""

from critics import countdown_oracle, lm, multihop_oracle, noisy, prm  # noqa: F401
