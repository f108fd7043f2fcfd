"""The names an arm's parts go by (`arm.name` for the filter, `arm.sampling`), as registries of
`"module:attr"` strings: listing or checking a name imports no arm code (the preflight checks the
names before Ray starts, `selftrain.loop.checks`).

A filter or sampling strategy of your own: decorate it with `register_filter(name)` /
`register_sampling(name)`, or publish it under the entry point group `selftrain.filters` /
`selftrain.sampling`.
"""

from __future__ import annotations

from typing import Any

from selftrain.registry import Registry

FILTERS: Registry[Any] = Registry("filter", {
    "rs": "selftrain.arms.arm:OutcomeFilter",
    "critique": "selftrain.arms.arm:CritiqueFilter",
    "top_m": "selftrain.arms.arm:ScoreFilter",
}, "selftrain.filters")
"""`arm.name` -> a class built with no arguments that fits `selftrain.arms.arm.Filter`."""

SAMPLINGS: Registry[Any] = Registry("sampling", {
    "fixed": "selftrain.arms.parts:fixed_sampling",
    "balanced": "selftrain.arms.parts:balanced_sampling",
    "distinct": "selftrain.arms.parts:distinct_sampling",
}, "selftrain.sampling")
"""`arm.sampling` -> a factory (arm config, pool, partition) -> `selftrain.arms.parts.Sampling`."""

register_filter = FILTERS.register
register_sampling = SAMPLINGS.register
