"""Where a command's wall time went, part by part: `make demo` ends with this table so a first
run on a new machine says whether its minutes went to the base model, an arm, or the report."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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

    def seconds(self) -> dict[str, float]:
        """Seconds per part, then `other` and `total` (the table's rows)."""
        total = time.perf_counter() - self.started
        return self.parts | {"other": total - sum(self.parts.values()), "total": total}

    def write(self, path: Path) -> None:
        """The table as JSON (`<experiment>/logs/minutes.json`): `make bench` reads each run's
        wall time from it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: round(v, 3) for k, v in self.seconds().items()},
                                   indent=1) + "\n")

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
