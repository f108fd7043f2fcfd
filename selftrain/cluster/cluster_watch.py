"""The driver's watch over the local Ray cluster it started.

When the cluster's gcs_server or raylet ends under a run (killed, out of memory; the dashboard
and runtime-env agents take the raylet with them), Ray's driver waits 60 s for the GCS and then
ends the process itself, exit 1, with a C++ log line and no word on how to go on; shutting the
actor groups down blocks on the dead GCS meanwhile, so even a run that had finished hung for a
minute and then failed (found by `make chaos`). The watch polls those two processes (the driver
started them, so it holds their handles) and calls `on_lost` with the name of the one that ended.
Nothing needs it on a cluster the run only joined (`ray.address`): that one is not the run's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CORE = ("gcs_server", "raylet")


def dead_core(node) -> str | None:
    """The first of the local node's gcs_server and raylet that has ended, else None."""
    processes = getattr(node, "all_processes", None) or {}
    for kind in CORE:
        for info in processes.get(kind, []):
            if info.process.poll() is not None:
                return kind
    return None


class ClusterWatch:
    """Polls the local cluster's core processes every `interval_s` from a daemon thread."""

    def __init__(self, on_lost: Callable[[str], None], interval_s: float = 0.5) -> None:
        import ray

        self.node = ray._private.worker._global_node if ray.is_initialized() else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(on_lost, interval_s),
                                        name="selftrain-cluster-watch", daemon=True)
        if self.node is not None and getattr(self.node, "all_processes", None):
            self._thread.start()

    def _run(self, on_lost: Callable[[str], None], interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            kind = dead_core(self.node)
            if kind is not None:
                on_lost(kind)
                return

    def close(self) -> str | None:
        """Stop watching (before the run shuts its groups down); the core process that has
        ended meanwhile, if any, so the caller skips what would block on it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return dead_core(self.node) if self.node is not None else None
