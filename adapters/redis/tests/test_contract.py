"""The transport contract, on a real Redis and on a real three-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from courier.serializer import Serializer
from courier.testing.contract import TransportContract
from courier.transports.base import Transport

#: A short lease, so "nobody else gets it while it is renewed" is shown past it.
LEASE = {"lease": "0.5"}


class RedisContract(TransportContract):
    delay = 1.0
    receive_timeout = 5.0
    #: A little over the lease: a settled message must not come back after it.
    redelivery_wait = 0.6
    lease = 1.0

    janitor: Any

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        return self.janitor.transport(queue, serializer, **{**LEASE, **options})  # type: ignore[no-any-return]

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        self.janitor.xadd_raw(queue, {"body": body, **headers})

    def test_priority_order(self, transport: Transport) -> None:
        # Priorities are declared unsupported on Redis (one stream per queue,
        # FIFO): the bus refuses priority= for it, and a priority header
        # alone changes nothing about the order.
        assert transport.capabilities.priority is False
        for n, priority in ((1, 0), (2, 9), (3, 5)):
            transport.send(self.envelope(n, priority=priority))
        received = self.receive_n(transport, 3)
        assert [r.envelope.message.n for r in received if r.envelope] == [1, 2, 3]  # type: ignore[attr-defined]
        assert [r.envelope.priority for r in received if r.envelope] == [0, 9, 5]
        transport.ack_many(received)


@pytest.mark.redis
class TestRedisContract(RedisContract):
    @pytest.fixture(autouse=True)
    def _broker(self, janitor: Any) -> None:
        self.janitor = janitor


@pytest.mark.redis_cluster
class TestRedisClusterContract(RedisContract):
    @pytest.fixture(autouse=True)
    def _broker(self, cluster_janitor: Any) -> None:
        self.janitor = cluster_janitor
