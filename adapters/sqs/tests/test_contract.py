"""The transport contract, on moto's SQS server through real HTTP and boto3."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from courier.serializer import Serializer
from courier.testing.contract import TransportContract, contract_serializer
from courier.transports.base import Received, Transport

pytestmark = pytest.mark.sqs


class TestSqsContract(TransportContract):
    #: DelaySeconds are whole seconds.
    delay = 1.0
    receive_timeout = 5.0
    #: A little over the janitor's lease=1: an unsettled message would be back by then.
    redelivery_wait = 1.2

    @pytest.fixture(autouse=True)
    def _broker(self, janitor: Any) -> None:
        self.janitor = janitor

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        return self.janitor.transport(  # type: ignore[no-any-return]
            f"{self.janitor.tag}-{queue}", serializer, **options
        )

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        # SQS bodies are text: a foreign producer that has bytes which are not
        # sends them base64-encoded and says so, as courier's own wire format does.
        try:
            text, attributes = body.decode(), dict(headers)
        except UnicodeDecodeError:
            import base64

            text = base64.b64encode(body).decode()
            attributes = {**headers, "courier-encoding": "base64"}
        self.janitor.send_raw(queue, text, attributes)

    def test_priority_order(self, transport: Transport) -> None:
        # SQS has no priorities: the transport says so, the bus refuses them,
        # and a priority header alone changes nothing about the order.
        assert transport.capabilities.priority is False
        for n, priority in ((1, 0), (2, 9), (3, 5)):
            transport.send(self.envelope(n, priority=priority))
        received = self.receive_n(transport, 3)
        assert sorted(r.envelope.message.n for r in received if r.envelope) == [1, 2, 3]  # type: ignore[attr-defined]
        assert {r.envelope.priority for r in received if r.envelope} == {0, 9, 5}
        transport.ack_many(received)

    def test_a_thousand_messages_no_loss_no_duplicate(self, queue: str) -> None:
        # The contract's case with the backlog kept at twenty: moto's server
        # does work proportional to the queue's length for every message it
        # sends, receives or deletes (SQS does not), so a thousand-message
        # backlog costs it minutes. Still a thousand messages, each received
        # once; the lease is long enough that none comes back while its chunk
        # is being received.
        transport = self.make_transport(queue, contract_serializer(), lease="20")
        transport.setup()
        batch = [self.envelope(n) for n in range(1000)]
        received: list[Received] = []
        deadline = time.monotonic() + 90.0
        for start in range(0, 1000, 20):
            transport.send_many(batch[start : start + 20])
            while len(received) < start + 20 and time.monotonic() < deadline:
                chunk = self.receive_n(transport, start + 20 - len(received))
                transport.ack_many(chunk)
                received += chunk
        ids = [r.envelope.id for r in received if r.envelope is not None]
        assert len(ids) == 1000
        assert set(ids) == {e.id for e in batch}
        self.assert_empty(transport)
