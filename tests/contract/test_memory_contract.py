"""The transport contract on ``memory://``, in both of its modes."""

from __future__ import annotations

from collections.abc import Mapping

from courier.serializer import Serializer
from courier.testing.contract import TransportContract, contract_serializer
from courier.transports.base import Transport
from courier.transports.dsn import Dsn
from courier.transports.memory import MemoryTransport


class TestMemoryContract(TransportContract):
    delay = 0.3
    receive_timeout = 2.0
    redelivery_wait = 0.1
    dsn_options = ""

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        # In-process, there is no lease: a transport that closes gives back
        # what it holds at once, as a broker does when a consumer leaves.
        options.pop("lease", None)
        dsn = Dsn.parse(f"memory://{queue}?queue={queue}{self.dsn_options}").with_options(**options)
        return MemoryTransport.from_dsn(dsn, name="contract", serializer=serializer)

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        assert isinstance(transport, MemoryTransport)
        transport.send_raw(body, headers, queue)

    def test_oversized_incoming_body_is_refused_undecoded(self, queue: str) -> None:
        # Without serialize=true messages stay objects: there is no body to
        # refuse. The serializing variant below runs the case.
        transport = self.make_transport(queue, contract_serializer(max_body=10))
        assert isinstance(transport, MemoryTransport)
        assert not transport.serialize


class TestSerializingMemoryContract(TestMemoryContract):
    """Every message through the serializer, as a real broker's consumer sees it."""

    dsn_options = "&serialize=true"
    test_oversized_incoming_body_is_refused_undecoded = (
        TransportContract.test_oversized_incoming_body_is_refused_undecoded
    )
