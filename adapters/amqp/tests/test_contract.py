"""The transport contract, on a real RabbitMQ (quorum queues, the default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from courier.serializer import Serializer
from courier.testing.contract import TransportContract
from courier.transports.base import Transport

pytestmark = pytest.mark.amqp


class TestAmqpContract(TransportContract):
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
        self.janitor.publish_raw(queue, body, headers, delivery_mode=2)

    def test_priority_order(self, transport: Transport) -> None:
        # Quorum queues (RabbitMQ 3.10) have no priorities: the transport says
        # so, the bus refuses priorities for it, and a priority header alone
        # changes nothing about the order.
        assert transport.capabilities.priority is False
        for n, priority in ((1, 0), (2, 9), (3, 5)):
            transport.send(self.envelope(n, priority=priority))
        received = self.receive_n(transport, 3)
        assert [r.envelope.message.n for r in received if r.envelope] == [1, 2, 3]  # type: ignore[attr-defined]
        assert [r.envelope.priority for r in received if r.envelope] == [0, 9, 5]
        transport.ack_many(received)
