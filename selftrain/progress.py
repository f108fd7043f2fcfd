"""Progress of long work, readable on a terminal and in a log file alike.

On a terminal it is a rich bar that disappears when done. When stdout is a file or a pipe a bar
would print nothing useful (or blank lines), so a slow stage would look hung: there, a plain
line is printed every `every_s` seconds while it runs (a heartbeat thread: also while its only
chunk runs), and one when it ends.
"""

from __future__ import annotations

import threading
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from selftrain.tracking import console


class StepProgress:
    """`with StepProgress("round 1 generate", total=12) as p: ...; p.advance()`.

    `fields` names numbers shown beside the count with their format, e.g. {"loss": ".3f"};
    `advance(loss=0.09)` updates them.
    """

    def __init__(self, desc: str, total: int, unit: str = "chunks", every_s: float = 10.0,
                 fields: dict[str, str] | None = None) -> None:
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.fields = fields or {}
        self.done = 0
        self.values: dict[str, float] = {name: float("nan") for name in self.fields}
        self._bar: Progress | None = None
        self._start = self._last = 0.0
        self._last_done = -1
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> StepProgress:
        self._start = self._last = time.time()
        if console.is_terminal:
            shown = " ".join(f"{n} {{task.fields[{n}]:{f}}}" for n, f in self.fields.items())
            extra = [TextColumn(shown)] if shown else []
            self._bar = Progress(TextColumn(f"  {self.desc}"), BarColumn(), MofNCompleteColumn(),
                                 *extra, TimeElapsedColumn(), console=console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, **self.values)
        else:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(0.1, self._last + self.every_s - time.time())):
            if time.time() - self._last >= self.every_s:
                self._line()

    def advance(self, steps: int = 1, **values: float) -> None:
        self.done += steps
        self.values.update(values)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, **values)
        elif time.time() - self._last >= self.every_s:
            self._line()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._bar is not None:
            self._bar.stop()
        elif self.done and self._last_done != self.done:
            self._line()

    def _line(self) -> None:
        self._last, self._last_done = time.time(), self.done
        shown = "".join(f" · {n} {self.values[n]:{f}}" for n, f in self.fields.items())
        console.print(f"  {self.desc}: {self.done}/{self.total} {self.unit}{shown} "
                      f"({self._last - self._start:.0f} s)", highlight=False, soft_wrap=True)
