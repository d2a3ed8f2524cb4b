"""How long a worker runs and how it batches: the options and their defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from courier.errors import ConfigurationError

__all__ = ["WorkerOptions", "rss_mib"]


@dataclass(frozen=True)
class WorkerOptions:
    """Every option of a worker, with its default; the CLI's flags map onto these.

    limit
        Stop after this many messages (handled, failed or retried).
    time_limit
        Stop after this many seconds.
    memory_limit
        Stop when the process's resident memory exceeds this many MiB.
    failure_limit
        Stop after this many handler failures (retried or failed for good).
    sleep (1.0)
        Seconds to wait for messages when the queues are empty.
    stop_when_empty
        Stop once nothing is ready, in flight or delayed on the consumed
        queues: retries that are still waiting keep the worker running.
    stop_when_idle
        Stop as soon as a receive finds nothing ready, even if retries are
        still delayed or other workers hold messages.
    prefetch (10)
        Most messages taken from the broker at once.
    ack_batch (50) / ack_interval (0.1)
        Acknowledgements are sent together once this many are pending or
        the oldest has waited this many seconds, and always before a
        blocking receive and before stopping.
    keepalive
        Seconds between lease renewals; default: what the transports ask.
    reconnect_delay (0.5) / reconnect_max_delay (30.0)
        Backoff after a broker error: doubling from the first, capped by
        the second, each wait jittered by +-50%.
    """

    limit: int | None = None
    time_limit: float | None = None
    memory_limit: float | None = None
    failure_limit: int | None = None
    sleep: float = 1.0
    stop_when_empty: bool = False
    stop_when_idle: bool = False
    prefetch: int = 10
    ack_batch: int = 50
    ack_interval: float = 0.1
    keepalive: float | None = None
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in ("limit", "failure_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("time_limit", "memory_limit", "keepalive"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be positive")
        if self.sleep < 0 or self.prefetch < 1 or self.ack_batch < 1:
            raise ConfigurationError("sleep must be >= 0, prefetch and ack_batch >= 1")

    @property
    def stops_when_empty(self) -> bool:
        """Whether an empty receive may end the run (either way of stopping)."""
        return self.stop_when_empty or self.stop_when_idle


def rss_mib() -> float:
    """Current resident memory of this process in MiB."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if os.uname().sysname != "Darwin" else peak / (1024 * 1024)
