"""Tables printed on the terminal, fitted to 100 columns.

A table wider than the terminal wraps every header into two lines and is hard to read; so each
terminal table drops its least important columns (named by the caller, dropped in that order)
until it fits, says which in its title, and leaves the full table to report.md or metrics.json.
A table that still does not fit (very long arm names) is wrapped by rich at 100 columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import RenderableType
from rich.constrain import Constrain
from rich.table import Table

TERMINAL_WIDTH = 100


def table_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """The width rich draws a default table in: each column as wide as its widest text, plus a
    space either side and one border per column (and one more at the right edge)."""
    widths = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return sum(w + 3 for w in widths) + 1


def fitted_table(title: str, headers: list[str], rows: list[list[str]], *,
                 droppable: Sequence[str] = (), left: int = 1,
                 elsewhere: str = "report.md") -> RenderableType:
    """A rich table of `rows` under `headers` no wider than TERMINAL_WIDTH.

    droppable: headers that may be left out, the least important first. left: how many leading
    columns are left-aligned text (the rest are numbers, right-aligned). elsewhere: where the
    columns left out can be read, named in the title.
    """
    keep = list(range(len(headers)))
    dropped: list[str] = []
    for name in droppable:
        if table_width([headers[i] for i in keep], [[r[i] for i in keep] for r in rows]) \
                <= TERMINAL_WIDTH:
            break
        if name in headers and headers.index(name) in keep:
            keep.remove(headers.index(name))
            dropped.append(name)
    if dropped:
        title += f" (not shown: {', '.join(dropped)}; see {elsewhere})"
    table = Table(title=title, title_justify="left")
    for i in keep:
        table.add_column(headers[i], justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*[row[i] for i in keep])
    return Constrain(table, TERMINAL_WIDTH)
