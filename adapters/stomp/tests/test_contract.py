"""The transport contract, on a real RabbitMQ through its STOMP plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from courier.serializer import Serializer
from courier.testing.contract import TransportContract
from courier.transports.base import Transport

pytestmark = pytest.mark.stomp


class TestStompContract(TransportContract):
    #: A delay level of the janitor's ``delay_levels=0.2,1,5``.
    delay = 1.0
    receive_timeout = 5.0
    redelivery_wait = 0.3

    @pytest.fixture(autouse=True)
    def _broker(self, janitor: Any) -> None:
        self.janitor = janitor

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        return self.janitor.transport(queue, serializer, **options)  # type: ignore[no-any-return]

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        # A foreign STOMP producer: plain /queue/ destination, its own headers.
        self.janitor.raw.send(f"/queue/{queue}", body, headers)

    def test_stats_count_ready_messages(self, transport: Transport) -> None:
        # STOMP has no frame that counts a queue: ready, delayed and dead are
        # unknown (None), and in_flight is what this transport holds.
        for n in range(3):
            transport.send(self.envelope(n))
        received = self.receive_n(transport, 3)
        stats = transport.stats()[0]
        assert stats.queue == transport.queue
        assert (stats.ready, stats.delayed, stats.dead) == (None, None, None)
        assert stats.in_flight == 3
        transport.ack_many(received)
        assert transport.stats()[0].in_flight == 0
        assert self.janitor.count(transport.queue) == 0

    def test_priority_order(self, transport: Transport) -> None:
        # Plain STOMP queues on RabbitMQ have no priorities: the transport says
        # so, the bus refuses priorities for it, and the order stays FIFO.
        assert transport.capabilities.priority is False
        for n, priority in ((1, 0), (2, 9), (3, 5)):
            transport.send(self.envelope(n, priority=priority))
        received = self.receive_n(transport, 3)
        assert [r.envelope.message.n for r in received if r.envelope] == [1, 2, 3]  # type: ignore[attr-defined]
        assert [r.envelope.priority for r in received if r.envelope] == [0, 9, 5]
        transport.ack_many(received)


class TestStompQuorumContract(TestStompContract):
    """The same contract on quorum queues, which count deliveries."""

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        return self.janitor.transport(queue, serializer, queue_type="quorum", **options)  # type: ignore[no-any-return]

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        # A foreign producer of a quorum queue repeats its type (or uses /amq/queue/).
        self.janitor.raw.send(f"/amq/queue/{queue}", body, headers)
