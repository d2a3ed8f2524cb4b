"""Fixtures for the STOMP adapter's tests: the broker's address and a janitor.

Every test that touches the broker goes through the ``stomp_url`` fixture,
which calls :func:`courier.testing.services.require_tcp`: skipped locally
when RabbitMQ's STOMP plugin is not running, a failure under ``CI=true``.
The address comes from ``COURIER_TEST_STOMP_URL``; RabbitMQ's AMQP port
(``COURIER_TEST_AMQP_URL``, the same broker) is used only to look at and
delete queues, which STOMP cannot do.

The ``janitor`` makes transports with unique names and small timings,
publishes foreign bytes with a raw stomp.py client, and deletes every queue
its transports addressed when the test ends.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest
import stomp  # type: ignore[import-untyped]

from courier.serializer import Serializer
from courier.testing.contract import contract_serializer
from courier.testing.services import env, require_tcp
from courier.transports.dsn import Dsn
from courier_stomp import StompTransport

DEFAULT_URL = "stomp://guest:guest@127.0.0.1:61613/%2f"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"

#: Small timings so the whole adapter suite stays well under two minutes.
FAST = {"delay_levels": "0.2,1,5", "heartbeat": "5", "connect_timeout": "5"}


def stomp_address() -> str:
    return env("COURIER_TEST_STOMP_URL", DEFAULT_URL)


@pytest.fixture(scope="session")
def stomp_url() -> str:
    url = stomp_address()
    dsn = Dsn.parse(url)
    require_tcp("RabbitMQ's STOMP plugin", dsn.host or "127.0.0.1", dsn.port or 61613)
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = env("COURIER_TEST_AMQP_URL", DEFAULT_AMQP_URL)
    dsn = Dsn.parse(url)
    require_tcp("RabbitMQ (AMQP, to inspect queues)", dsn.host or "127.0.0.1", dsn.port or 5672)
    return url


class RawClient(stomp.ConnectionListener):  # type: ignore[misc]
    """A bare stomp.py connection: a foreign producer, as a PHP or Java app would be."""

    def __init__(self, url: str) -> None:
        dsn = Dsn.parse(url)
        vhost = dsn.path[1:] if dsn.path.startswith("/") else dsn.path
        self.errors: list[str] = []
        self._receipts: dict[str, threading.Event] = {}
        self.conn = stomp.Connection12(
            [(dsn.host or "127.0.0.1", dsn.port or 61613)], vhost=vhost or "/", auto_decode=False
        )
        self.conn.set_listener("raw", self)
        self.conn.connect(dsn.username, dsn.password, wait=True)

    def on_receipt(self, frame: Any) -> None:
        event = self._receipts.get(frame.headers["receipt-id"])
        if event is not None:
            event.set()

    def on_error(self, frame: Any) -> None:
        self.errors.append(frame.headers.get("message", "?"))

    def send(self, destination: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """SEND and wait for the receipt, as a careful foreign producer does."""
        receipt = uuid.uuid4().hex
        event = self._receipts[receipt] = threading.Event()
        self.conn.send(destination, body, headers={**(headers or {}), "receipt": receipt})
        deadline = time.monotonic() + 5
        while not event.wait(0.02) and not self.errors and time.monotonic() < deadline:
            pass
        assert event.is_set(), f"no receipt for the raw SEND to {destination}: {self.errors}"

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect()


class Janitor:
    """Makes uniquely named transports and raw clients; deletes their queues afterwards."""

    def __init__(self, url: str, amqp_url: str) -> None:
        self.url = url
        self.amqp_url = amqp_url
        self.tag = f"t-{uuid.uuid4().hex[:10]}"
        self.transports: list[StompTransport] = []
        self.queues: set[str] = set()
        self._raw: RawClient | None = None
        self._amqp: Any = None

    def name(self, what: str = "q") -> str:
        return f"{self.tag}-{what}-{uuid.uuid4().hex[:6]}"

    def options(self, queue: str, **options: str) -> dict[str, str]:
        fast = dict(FAST)
        if "lease" in options:  # lease sets the heartbeat itself
            del fast["heartbeat"]
        return {"queue": queue, "delay_prefix": f"{self.tag}.delay", **fast, **options}

    def transport(
        self,
        queue: str | None = None,
        serializer: Serializer | None = None,
        *,
        url: str | None = None,
        name: str = "stomp",
        **options: str,
    ) -> StompTransport:
        queue = queue or self.name()
        self.queues.add(queue)
        dsn = Dsn.parse(url or self.url).with_options(**self.options(queue, **options))
        transport = StompTransport(dsn, name=name, serializer=serializer or contract_serializer())
        self.transports.append(transport)
        return transport

    def dsn(self, queue: str, **options: str) -> str:
        self.queues.add(queue)
        return (
            Dsn.parse(self.url).with_options(**self.options(queue, **options)).render(reveal=True)
        )

    @property
    def raw(self) -> RawClient:
        """A foreign STOMP producer on the same broker."""
        if self._raw is None:
            self._raw = RawClient(self.url)
        return self._raw

    def channel(self) -> Any:
        """A raw pika channel, to look at queues (STOMP cannot count them)."""
        if self._amqp is None or not self._amqp.is_open:
            self._amqp = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        return self._amqp.channel()

    def count(self, queue: str) -> int:
        channel = self.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            if channel.is_open:
                channel.close()

    def get_raw(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """One message taken off ``queue`` by pika (acknowledged), or None."""
        channel = self.channel()
        try:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            return None if method is None else (method, properties, body)
        finally:
            channel.close()

    def cleanup(self) -> None:
        for transport in self.transports:
            transport.close()
            self.queues.update(transport.declared())
        if self._raw is not None:
            self._raw.close()
        names = set(self.queues)
        names.update(queue + ".dead" for queue in self.queues)
        channel = self.channel()
        try:
            for queue in sorted(names):
                if not channel.is_open:
                    channel = self.channel()
                channel.queue_delete(queue)
        finally:
            if self._amqp is not None and self._amqp.is_open:
                self._amqp.close()


@pytest.fixture
def janitor(stomp_url: str, amqp_url: str) -> Iterator[Janitor]:
    keeper = Janitor(stomp_url, amqp_url)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def transport(janitor: Janitor) -> StompTransport:
    transport = janitor.transport()
    transport.setup()
    return transport
