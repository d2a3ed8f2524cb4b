"""Prometheus metrics for workers, through prometheus-client.

:class:`PrometheusListener` turns worker events into counters, a handler
duration histogram and the time of the last success; it works unchanged in
a pool's children, where prometheus-client's multiprocess mode writes the
values to files (``PROMETHEUS_MULTIPROC_DIR``) for the pool's one endpoint
to add up. :class:`QueueDepthCollector` asks the brokers for queue depths
when Prometheus scrapes, not on a timer, so the figures are as fresh as the
scrape and cost nothing between scrapes.

Every series is labelled by transport name and message type only (see
:mod:`courier.metrics`): no DSN, so no password, and no unbounded value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from courier.errors import CourierError
from courier.events import MessageFailed, MessageHandled, WorkerEvent
from courier.metrics import message_labels
from courier.transports.base import Outcome

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from courier.transports.base import Transport

__all__ = [
    "MetricsServer",
    "PrometheusListener",
    "QueueDepthCollector",
    "QueueSource",
    "register_queue_depths",
]

logger = logging.getLogger("courier.metrics")

_LABELS = ("type", "transport")
_DEPTH_LABELS = ("transport", "queue", "state")
#: The QueueStats fields exported, and their ``state`` label.
_STATES = (("ready", "ready"), ("in_flight", "in_flight"), ("delayed", "delayed"), ("dead", "dead"))


class PrometheusListener:
    """Counts what a worker does into prometheus-client metrics on ``registry``.

    ``failed`` means failed for good (dead-lettered or rejected), ``retried``
    failed and coming again, as in the worker's own counts; ``dead_lettered``
    is the part of ``failed`` that went to the failure store.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "courier_messages_handled",
            "Messages whose handler succeeded.",
            _LABELS,
            registry=registry,
        )
        self.failed = Counter(
            "courier_messages_failed",
            "Messages that failed for good (dead-lettered or rejected).",
            _LABELS,
            registry=registry,
        )
        self.retried = Counter(
            "courier_messages_retried",
            "Handler failures that will be tried again (retried or given back).",
            _LABELS,
            registry=registry,
        )
        self.dead_lettered = Counter(
            "courier_messages_dead_lettered",
            "Messages copied to the failure store (or the invalid-message store).",
            _LABELS,
            registry=registry,
        )
        self.duration = Histogram(
            "courier_message_handling_seconds",
            "Time from receiving a message to its handler's success.",
            _LABELS,
            registry=registry,
        )
        self.last_handled = Gauge(
            "courier_last_message_handled_timestamp_seconds",
            "Unix time of the last message handled successfully.",
            ("transport",),
            registry=registry,
            multiprocess_mode="max",
        )

    def __call__(self, event: WorkerEvent) -> None:
        if isinstance(event, MessageHandled):
            labels = message_labels(event.received)
            self.handled.labels(*labels).inc()
            self.duration.labels(*labels).observe(event.seconds)
            self.last_handled.labels(labels[1]).set(time.time())
        elif isinstance(event, MessageFailed):
            labels = message_labels(event.received)
            if event.will_retry:
                self.retried.labels(*labels).inc()
                return
            self.failed.labels(*labels).inc()
            if event.outcome is Outcome.DEAD_LETTERED:
                self.dead_lettered.labels(*labels).inc()


@dataclass(frozen=True, slots=True)
class QueueSource:
    """One transport the collector asks, and the queues it reports."""

    name: str
    transport: Transport
    queues: Sequence[str]


class QueueDepthCollector(Collector):
    """``courier_queue_messages{transport, queue, state}``, asked of the brokers at scrape time.

    A broker that cannot answer costs its own series, never the scrape:
    ``courier_queue_stats_up{transport}`` says 0 for it and the error is
    logged (its DSN masked by the transport's own error text). Scrapes are
    serialised, since a transport is not asked from two threads at once.
    """

    def __init__(self, sources: Iterable[QueueSource]) -> None:
        self.sources = list(sources)
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        # Registering must not ask the brokers: describe without collecting.
        yield GaugeMetricFamily(
            "courier_queue_messages", "", labels=("transport", "queue", "state")
        )
        yield GaugeMetricFamily("courier_queue_stats_up", "", labels=("transport",))

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "courier_queue_messages",
            "Messages in a queue by state (ready, in_flight, delayed, dead), "
            "as the broker counts them at scrape time.",
            labels=_DEPTH_LABELS,
        )
        up = GaugeMetricFamily(
            "courier_queue_stats_up",
            "1 if the transport answered the queue-depth question at this scrape, else 0.",
            labels=("transport",),
        )
        with self._lock:
            for source in self.sources:
                try:
                    counts = source.transport.stats(list(source.queues))
                except (CourierError, OSError) as error:
                    logger.warning("queue depths of %r unavailable: %s", source.name, error)
                    up.add_metric([source.name], 0)
                    continue
                up.add_metric([source.name], 1)
                for stats in counts:
                    for field, state in _STATES:
                        value = getattr(stats, field)
                        if value is not None:
                            depth.add_metric([source.name, stats.queue, state], value)
        yield depth
        yield up


class MetricsServer:
    """The HTTP endpoint (``/metrics``) on ``host:port``, serving ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        self.registry = registry
        server: WSGIServer
        server, self._thread = start_http_server(port, host, registry=registry)
        self._server = server
        self.host = host
        self.port = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def register_queue_depths(
    registry: CollectorRegistry, transports: Mapping[str, tuple[Transport, Sequence[str]]]
) -> QueueDepthCollector:
    """Add a :class:`QueueDepthCollector` for ``{name: (transport, queues)}`` to ``registry``."""
    collector = QueueDepthCollector(
        QueueSource(name, transport, queues) for name, (transport, queues) in transports.items()
    )
    registry.register(collector)
    return collector
