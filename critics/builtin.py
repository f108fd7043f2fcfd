"""Registers the built-in critics (importing their modules runs the decorators)."""

from critics import countdown_oracle, noisy  # noqa: F401
