"""Fixtures for the AMQP adapter's tests: the broker's address and a janitor.

Every test that touches RabbitMQ goes through the ``amqp_url`` fixture,
which calls :func:`courier.testing.services.require_tcp`: skipped locally
when RabbitMQ is not running, a failure under ``CI=true``. The address
comes from ``COURIER_TEST_AMQP_URL``.

The ``janitor`` makes transports with unique names (queues, dead-letter
exchange, delay queues) and small timings, and deletes everything they
declared when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

from courier.serializer import Serializer
from courier.testing.contract import contract_serializer
from courier.testing.services import env, require_tcp
from courier.transports.dsn import Dsn
from courier_amqp import AmqpTransport

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"

#: Small timings so the whole adapter suite stays well under two minutes.
FAST = {"delay_levels": "0.2,1,5", "heartbeat": "5", "connect_timeout": "5"}


def amqp_address() -> str:
    return env("COURIER_TEST_AMQP_URL", DEFAULT_URL)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = amqp_address()
    dsn = Dsn.parse(url)
    require_tcp("RabbitMQ", dsn.host or "127.0.0.1", dsn.port or 5672)
    return url


def with_port(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port`` (a proxy in front of the broker)."""
    dsn = Dsn.parse(url)
    auth = f"{dsn.username or 'guest'}:{dsn.password or 'guest'}@"
    return f"{dsn.scheme}://{auth}127.0.0.1:{port}{'/%2f' if dsn.path in ('', '//') else dsn.path}"


class Janitor:
    """Makes uniquely named transports and raw pika channels; deletes it all afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tag = f"t-{uuid.uuid4().hex[:10]}"
        self.transports: list[AmqpTransport] = []
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()
        self._raw: Any = None
        self._channel: Any = None

    def name(self, what: str = "q") -> str:
        return f"{self.tag}-{what}-{uuid.uuid4().hex[:6]}"

    def options(self, queue: str, **options: str) -> dict[str, str]:
        fast = dict(FAST)
        if "lease" in options:  # lease sets the heartbeat itself
            del fast["heartbeat"]
        return {
            "queue": queue,
            "dead_letter_exchange": f"{self.tag}.dlx",
            "delay_prefix": f"{self.tag}.delay",
            **fast,
            **options,
        }

    def transport(
        self,
        queue: str | None = None,
        serializer: Serializer | None = None,
        *,
        url: str | None = None,
        name: str = "amqp",
        **options: str,
    ) -> AmqpTransport:
        queue = queue or self.name()
        dsn = Dsn.parse(url or self.url).with_options(**self.options(queue, **options))
        transport = AmqpTransport(dsn, name=name, serializer=serializer or contract_serializer())
        self.transports.append(transport)
        return transport

    def dsn(self, queue: str, **options: str) -> str:
        return (
            Dsn.parse(self.url).with_options(**self.options(queue, **options)).render(reveal=True)
        )

    def channel(self) -> Any:
        """A raw pika channel (a foreign producer, or a test's own look at the broker)."""
        if self._channel is None or not self._channel.is_open:
            if self._raw is None or not self._raw.is_open:
                self._raw = pika.BlockingConnection(pika.URLParameters(self.url))
            self._channel = self._raw.channel()
        return self._channel

    def publish_raw(
        self,
        queue: str,
        body: bytes,
        headers: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> None:
        """Bytes straight onto ``queue`` through the default exchange, as pika sends them."""
        props = pika.BasicProperties(headers=dict(headers or {}) or None, **properties)
        self.channel().basic_publish("", queue, body, props, mandatory=True)

    def get_raw(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """One message taken off ``queue`` by pika (acknowledged), or None."""
        method, properties, body = self.channel().basic_get(queue, auto_ack=True)
        return None if method is None else (method, properties, body)

    def count(self, queue: str) -> int:
        frame = self.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count)

    def cleanup(self) -> None:
        for transport in self.transports:
            transport.close()
            declared = transport.declared()
            self.queues.update(declared["queues"])
            self.exchanges.update(declared["exchanges"])
        try:
            channel = self.channel()
            for queue in sorted(self.queues):
                channel.queue_delete(queue)
            for exchange in sorted(self.exchanges):
                channel.exchange_delete(exchange)
        finally:
            if self._raw is not None and self._raw.is_open:
                self._raw.close()


@pytest.fixture
def janitor(amqp_url: str) -> Iterator[Janitor]:
    keeper = Janitor(amqp_url)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def transport(janitor: Janitor) -> AmqpTransport:
    transport = janitor.transport()
    transport.setup()
    return transport
