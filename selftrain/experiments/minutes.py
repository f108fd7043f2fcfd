"""Where a command's wall time went, part by part: `make demo` ends with this table so a first
run on a new machine says whether its minutes went to the base model, an arm, or the report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.table import Table


@dataclass
class Minutes:
    """Seconds per named part, in the order the parts first ran."""

    parts: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start

    def table(self, title: str) -> Table:
        total = time.perf_counter() - self.started
        table = Table(title=title, title_justify="left")
        table.add_column("part")
        table.add_column("seconds", justify="right")
        table.add_column("share", justify="right")
        rows = list(self.parts.items()) + [("other", total - sum(self.parts.values())),
                                           ("total", total)]
        for name, seconds in rows:
            table.add_row(name, f"{seconds:.1f}", f"{seconds / total:.0%}" if total else "-")
        return table
