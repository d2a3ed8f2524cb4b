"""StatsD metrics for workers, through the ``statsd`` package.

StatsD has no labels, so the labels of :mod:`courier.metrics` become parts
of the name: ``<prefix>.messages.handled.<transport>.<type>`` (a counter),
``<prefix>.messages.handling.<transport>.<type>`` (a timing in
milliseconds), and ``failed``, ``retried``, ``dead_lettered`` like
``handled``. Dots in a message type (``email.send``) would add levels to
the name, so every character outside ``[A-Za-z0-9_-]`` becomes ``_``
(``email_send``); that also keeps the packet ASCII, which the protocol
needs. Each process sends its own packets over UDP; the StatsD server adds
up a pool's children, and a server that is down costs nothing but the
figures.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from statsd import StatsClient  # type: ignore[import-untyped]  # no stubs, no py.typed

from courier.events import MessageFailed, MessageHandled, WorkerEvent
from courier.metrics import message_labels
from courier.transports.base import Outcome

if TYPE_CHECKING:
    from courier.transports.base import Received

__all__ = ["StatsdListener", "parse_address", "stat_part"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def stat_part(label: str) -> str:
    """A label value as one part of a StatsD name."""
    return _UNSAFE.sub("_", label) or "_"


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8125`` for IPv6; the port defaults to 8125)."""
    host, colon, port = address.rpartition(":")
    if not colon or "]" in port:
        host, port = address, "8125"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class StatsdListener:
    """Sends what a worker does to a StatsD server as counters and timings."""

    def __init__(self, client: StatsClient) -> None:
        self.client = client

    @classmethod
    def to(cls, address: str, prefix: str = "courier") -> StatsdListener:
        host, port = parse_address(address)
        return cls(StatsClient(host, port, prefix=prefix or None, ipv6=":" in host))

    def close(self) -> None:
        """Close the UDP socket."""
        self.client.close()

    def __call__(self, event: WorkerEvent) -> None:
        if isinstance(event, MessageHandled):
            where = self._where(event.received)
            self.client.incr(f"messages.handled.{where}")
            self.client.timing(f"messages.handling.{where}", event.seconds * 1000.0)
        elif isinstance(event, MessageFailed):
            where = self._where(event.received)
            if event.will_retry:
                self.client.incr(f"messages.retried.{where}")
                return
            self.client.incr(f"messages.failed.{where}")
            if event.outcome is Outcome.DEAD_LETTERED:
                self.client.incr(f"messages.dead_lettered.{where}")

    @staticmethod
    def _where(received: Received) -> str:
        kind, transport = message_labels(received)
        return f"{stat_part(transport)}.{stat_part(kind)}"
