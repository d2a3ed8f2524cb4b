"""One Prometheus endpoint for a pool of workers (prometheus-client's multiprocess mode).

Each child of ``courier consume --processes N`` records its metrics as
usual; with ``PROMETHEUS_MULTIPROC_DIR`` in its environment,
prometheus-client writes them to files in that folder instead of keeping
them in memory. The pool's parent serves the sum over those files, so
Prometheus scrapes one endpoint whatever the number of children, and a
child that is replaced keeps its counts (counters never go backwards).

The folder is made fresh for each pool and removed when it stops: files a
previous run left would otherwise be counted again.
"""

from __future__ import annotations

import shutil
import tempfile

from prometheus_client import CollectorRegistry, multiprocess

from courier.metrics.prometheus import MetricsServer

__all__ = ["ENV", "PoolMetrics"]

#: The environment variable prometheus-client reads in the children.
ENV = "PROMETHEUS_MULTIPROC_DIR"


class PoolMetrics:
    """The pool's side: the shared folder, the endpoint, and forgetting dead children."""

    def __init__(self, *, host: str, port: int) -> None:
        self.directory = tempfile.mkdtemp(prefix="courier-metrics-")
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=self.directory)  # type: ignore[no-untyped-call]
        try:
            self.server = MetricsServer(self.registry, host=host, port=port)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    @property
    def env(self) -> dict[str, str]:
        """What the children need in their environment."""
        return {ENV: self.directory}

    def child_exited(self, pid: int) -> None:
        """Drop a dead child's live gauges (its counters and histograms stay counted)."""
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.directory, ignore_errors=True)
