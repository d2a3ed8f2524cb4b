"""The contract every transport keeps, as abstract pytest classes.

Subclass :class:`TransportContract` in your transport's tests, implement
:meth:`~TransportContract.make_transport` and :meth:`~TransportContract.inject_raw`,
and every case below runs against your broker::

    class TestSqliteContract(TransportContract):
        def make_transport(self, queue, serializer, **options):
            dsn = f"sqlite:///{self.path}?queue={queue}&lease=2"
            return SqliteTransport.from_dsn(Dsn.parse(dsn).with_options(**options),
                                            name="contract", serializer=serializer)

        def inject_raw(self, transport, queue, body, headers):
            ...  # put bytes on the queue as a foreign producer would

What a transport cannot do natively it declares in its capabilities; the
cases that need it then check the declaration instead (a transport without
``delay`` must say so, and the core refuses delayed retries on it).

Tune the class attributes to the broker: ``delay`` for delayed-delivery
cases, ``receive_timeout`` for how long a message may take to show up,
``redelivery_wait`` for how long to watch that an acknowledged message does
not come back (a little over the lease, for leased transports).
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from courier.bus import Bus
from courier.dead_letters import DeadLetters
from courier.envelope import Envelope, ErrorDetails
from courier.errors import (
    ConfigurationError,
    MessageDecodingFailed,
    MessageTooLarge,
    ValidationFailed,
)
from courier.message import Event, Message
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer, Serializer
from courier.topology import require_listable
from courier.transports.base import (
    KEPT_HEADER,
    Listable,
    Outcome,
    Received,
    Transport,
    Unacked,
    subscription_queue,
)
from courier.transports.memory import MemoryTransport

__all__ = ["ContractEvent", "ContractMessage", "TransportContract"]


class ContractMessage(Message):
    message_name: ClassVar[str] = "courier.contract.message"

    n: int
    text: str = "hello"


class ContractEvent(Event):
    message_name: ClassVar[str] = "courier.contract.event"

    n: int


def contract_serializer(max_body: int | None = None) -> JsonSerializer:
    registry = MessageRegistry()
    registry.register(ContractMessage)
    registry.register(ContractEvent)
    if max_body is None:
        return JsonSerializer(registry)
    return JsonSerializer(registry, max_body=max_body)


class TransportContract(ABC):
    """Abstract test cases; see the module docstring."""

    #: Seconds of delay used by the delayed-delivery cases.
    delay: ClassVar[float] = 1.0
    #: Longest wait for a message that should arrive.
    receive_timeout: ClassVar[float] = 5.0
    #: How long to watch that a settled message does not come back.
    redelivery_wait: ClassVar[float] = 0.3
    #: The ``lease=`` the dead-holder and ttr cases set, in seconds.
    lease: ClassVar[float] = 1.0

    # -- what a subclass provides ------------------------------------------

    @abstractmethod
    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        """A transport on a fresh ``queue`` of the broker under test.

        ``options`` are DSN options the case needs (``max_message_size``).
        """

    @abstractmethod
    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Put ``body`` with ``headers`` on ``queue`` as a foreign producer would."""

    # -- fixtures ------------------------------------------------------------

    @pytest.fixture
    def queue(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def transport(self, queue: str) -> Iterator[Transport]:
        transport = self.make_transport(queue, contract_serializer())
        transport.setup()
        try:
            yield transport
        finally:
            transport.close()

    # -- helpers ---------------------------------------------------------------

    def envelope(self, n: int = 1, **changes: Any) -> Envelope:
        return Envelope(ContractMessage(n=n), **changes)

    def receive_n(
        self,
        transport: Transport,
        count: int,
        queues: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Received]:
        """Receive until ``count`` messages arrived or the timeout passed."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.receive_timeout)
        got: list[Received] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            got += transport.receive(queues, max=min(count - len(got), 100), timeout=remaining)
        return got

    def receive_one(self, transport: Transport, queues: Sequence[str] | None = None) -> Received:
        got = self.receive_n(transport, 1, queues)
        assert got, "expected a message, none arrived"
        return got[0]

    def assert_empty(self, transport: Transport, queues: Sequence[str] | None = None) -> None:
        late = transport.receive(queues, max=10, timeout=self.redelivery_wait)
        assert late == [], f"expected no message, got {late}"

    # -- the cases -----------------------------------------------------------

    def test_send_receive_ack(self, transport: Transport) -> None:
        sent = self.envelope(7)
        result = transport.send(sent)
        assert result.id == sent.id
        received = self.receive_one(transport)
        assert received.envelope is not None
        assert received.envelope == sent.with_(
            transport_message_id=received.envelope.transport_message_id
        )
        assert received.envelope.received is received
        assert received.queue == transport.queue
        transport.ack(received)
        self.assert_empty(transport)

    def test_ack_many(self, transport: Transport) -> None:
        for n in range(10):
            transport.send(self.envelope(n))
        received = self.receive_n(transport, 10)
        assert len(received) == 10
        transport.ack_many(received)
        self.assert_empty(transport)

    def test_send_many(self, transport: Transport) -> None:
        batch = [self.envelope(n) for n in range(20)]
        results = transport.send_many(batch)
        assert [e.id for e in results] == [e.id for e in batch]
        received = self.receive_n(transport, 20)
        assert sorted(r.envelope.id for r in received if r.envelope) == sorted(e.id for e in batch)
        transport.ack_many(received)

    def test_publish_reaches_each_subscription_once(self, transport: Transport) -> None:
        topic = f"{transport.queue}-topic"
        transport.setup(topics={topic: ["a", "b"]})
        event = Envelope(ContractEvent(n=1))
        transport.publish(event, topic, ["a", "b"])
        for name in ("a", "b"):
            queues = [subscription_queue(topic, name)]
            received = self.receive_one(transport, queues)
            assert received.envelope is not None
            assert received.envelope.id == event.id
            assert received.queue == queues[0]
            transport.ack(received)
            self.assert_empty(transport, queues)

    def test_publish_with_no_subscription_is_not_an_error(self, transport: Transport) -> None:
        transport.publish(Envelope(ContractEvent(n=1)), f"{transport.queue}-nobody", [])

    def test_retry_comes_back_after_the_delay(self, transport: Transport) -> None:
        transport.send(self.envelope(1))
        received = self.receive_one(transport)
        assert received.envelope is not None
        if not transport.capabilities.delay:
            transport.retry(received, received.envelope.with_(attempt=2, received=None), 0.0)
            again = self.receive_one(transport)
            assert again.envelope is not None
            assert again.envelope.attempt == 2
            transport.ack(again)
            return
        retried = received.envelope.with_(attempt=2, delay=self.delay, received=None)
        started = time.monotonic()
        transport.retry(received, retried, self.delay)
        early = transport.receive(max=1, timeout=self.delay * 0.5)
        assert early == [], "a delayed retry arrived early"
        again = self.receive_one(transport)
        waited = time.monotonic() - started
        assert again.envelope is not None
        assert again.envelope.id == retried.id
        assert again.envelope.attempt == 2
        assert waited >= self.delay * 0.9
        transport.ack(again)
        self.assert_empty(transport)

    def test_delayed_send(self, transport: Transport) -> None:
        if not transport.capabilities.delay:
            pytest.skip("this transport declares no delayed delivery")
        transport.send(self.envelope(1, delay=self.delay))
        assert transport.receive(max=1, timeout=self.delay * 0.5) == []
        received = self.receive_one(transport)
        transport.ack(received)

    def test_reject_is_not_redelivered(self, transport: Transport) -> None:
        transport.send(self.envelope(1))
        received = self.receive_one(transport)
        transport.reject(received, "the contract rejects it")
        self.assert_empty(transport)
        if transport.capabilities.native_dead_letter:
            dead = transport.stats()[0].dead
            if dead is not None:
                assert dead >= 1

    def test_dead_letter_to_the_failure_transport(self, transport: Transport) -> None:
        failure = MemoryTransport(name="failed", queue="failed", serializer=transport.serializer)
        dead_letters = DeadLetters(lambda name: failure, failure_transport="failed")
        transport.send(self.envelope(3))
        received = self.receive_one(transport)
        assert received.envelope is not None
        outcome = dead_letters.failed(received, received.envelope, RuntimeError("it broke"))
        assert outcome is Outcome.DEAD_LETTERED
        transport.ack(received)
        [kept] = failure.list()
        assert kept.id == received.envelope.id
        assert kept.error is not None
        assert kept.error.error_class == "RuntimeError"
        assert kept.error.message == "it broke"
        assert kept.error.transport == transport.name
        assert kept.error.queue == transport.queue
        self.assert_empty(transport)

    def test_release_gives_it_back_at_once(self, transport: Transport) -> None:
        transport.send(self.envelope(1))
        first = self.receive_one(transport)
        assert first.delivery_count == 1
        transport.release(first)
        second = self.receive_one(transport)
        assert second.envelope is not None
        assert first.envelope is not None
        assert second.envelope.id == first.envelope.id
        if transport.capabilities.delivery_count:
            assert second.delivery_count == 2
        transport.ack(second)
        self.assert_empty(transport)

    def test_renew_keeps_the_message_held(self, transport: Transport) -> None:
        transport.send(self.envelope(1))
        received = self.receive_one(transport)
        transport.renew(received)
        if transport.capabilities.lease:
            # Hold it for longer than the lease, renewing; nobody else gets it.
            deadline = time.monotonic() + self.redelivery_wait * 1.5
            while time.monotonic() < deadline:
                transport.renew(received)
                assert transport.receive(max=1, timeout=self.redelivery_wait / 4) == []
        transport.ack(received)
        self.assert_empty(transport)

    def test_delivery_count_starts_at_one(self, transport: Transport) -> None:
        transport.send(self.envelope(1))
        received = self.receive_one(transport)
        assert received.delivery_count == 1
        transport.ack(received)

    def test_stats_count_ready_messages(self, transport: Transport) -> None:
        for n in range(3):
            transport.send(self.envelope(n))
        deadline = time.monotonic() + self.receive_timeout
        stats = transport.stats()[0]
        while stats.ready != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = transport.stats()[0]
        assert stats.queue == transport.queue
        assert stats.ready == 3
        received = self.receive_n(transport, 3)
        transport.ack_many(received)

    def test_size_limit_refuses_before_sending(self, queue: str) -> None:
        transport = self.make_transport(queue, contract_serializer(), max_message_size="200")
        transport.setup()
        try:
            assert transport.capabilities.max_message_size == 200
            with pytest.raises(MessageTooLarge):
                transport.send(Envelope(ContractMessage(n=1, text="x" * 500)))
            transport.send(Envelope(ContractMessage(n=2, text="small")))
            received = self.receive_one(transport)
            assert received.envelope is not None
            assert received.envelope.message == ContractMessage(n=2, text="small")
            transport.ack(received)
            self.assert_empty(transport)
        finally:
            transport.close()

    def test_oversized_incoming_body_is_refused_undecoded(self, queue: str) -> None:
        sender = self.make_transport(queue, contract_serializer())
        receiver = self.make_transport(queue, contract_serializer(max_body=100))
        sender.setup()
        try:
            sender.send(Envelope(ContractMessage(n=1, text="y" * 1000)))
            received = self.receive_one(receiver)
            assert received.envelope is None
            assert isinstance(received.error, MessageDecodingFailed)
            assert "exceeds" in str(received.error)
            assert received.raw is not None
            assert len(received.raw) > 1000
            receiver.ack(received)
        finally:
            sender.close()
            receiver.close()

    def test_headers_round_trip(self, transport: Transport) -> None:
        error = ErrorDetails("app.Boom", "it broke", "Traceback ...", 1700000000.5, "email", "q")
        sent = self.envelope(
            5,
            attempt=3,
            ttr=30.0,
            correlation_id="conversation-1",
            causation_id="cause-1",
            error=error,
            headers={"x-tenant": "acme", "trace": "1-2-3"},
        )
        transport.send(sent)
        received = self.receive_one(transport)
        got = received.envelope
        assert got is not None
        assert got.id == sent.id
        assert got.attempt == 3
        assert got.ttr == 30.0
        assert got.correlation_id == "conversation-1"
        assert got.causation_id == "cause-1"
        assert got.error == error
        assert dict(got.headers) == {"x-tenant": "acme", "trace": "1-2-3"}
        assert abs(got.timestamp - sent.timestamp) < 0.001
        transport.ack(received)

    def test_priority_order(self, transport: Transport) -> None:
        if not transport.capabilities.priority:
            pytest.skip("this transport declares no priorities")
        transport.send(self.envelope(1, priority=0))
        transport.send(self.envelope(2, priority=9))
        transport.send(self.envelope(3, priority=5))
        time.sleep(0.1)
        received = self.receive_n(transport, 3)
        assert [r.envelope.message.n for r in received if r.envelope] == [2, 3, 1]  # type: ignore[attr-defined]
        transport.ack_many(received)

    @pytest.mark.parametrize(
        ("body", "headers", "expected"),
        [
            (b'{"n": 1', {"courier-type": "courier.contract.message"}, MessageDecodingFailed),
            (b"\xff\xfe", {"courier-type": "courier.contract.message"}, MessageDecodingFailed),
            (b"[1, 2]", {"courier-type": "courier.contract.message"}, MessageDecodingFailed),
            (b'{"n": 1}', {"courier-type": "os.system"}, MessageDecodingFailed),
            (b'{"n": 1}', {}, MessageDecodingFailed),
            (
                b'{"n": 1}',
                {"courier-type": "courier.contract.message", "content-type": "text/x-php"},
                MessageDecodingFailed,
            ),
            (
                b'{"n": "not a number"}',
                {"courier-type": "courier.contract.message", "courier-id": "x1"},
                ValidationFailed,
            ),
        ],
        ids=[
            "truncated",
            "not-utf8",
            "array",
            "unknown-type",
            "no-type",
            "content-type",
            "invalid",
        ],
    )
    def test_undecodable_bytes_come_back_with_the_reason(
        self,
        transport: Transport,
        body: bytes,
        headers: dict[str, str],
        expected: type[Exception],
    ) -> None:
        self.inject_raw(transport, transport.queue, body, {"courier-id": "raw-1", **headers})
        received = self.receive_one(transport)
        assert received.envelope is None
        assert isinstance(received.error, expected)
        assert received.raw == body
        transport.ack(received)
        self.assert_empty(transport)

    def test_keep_is_idempotent_on_the_envelope_id(self, transport: Transport) -> None:
        if not (transport.capabilities.listable and isinstance(transport, Listable)):
            # Not a possible failure store: the startup check says so in one line.
            with pytest.raises(ConfigurationError, match="cannot list"):
                require_listable(transport, "failure transport 'contract'")
            return
        stored = self.envelope(4, error=ErrorDetails("app.Boom", "first", failed_at=1.0))
        assert transport.keep(stored) == 1
        again = stored.with_(error=ErrorDetails("app.Boom", "second", failed_at=2.0))
        assert transport.keep(again) == 2
        kept = [envelope for envelope in transport.list() if envelope.id == stored.id]
        assert len(kept) == 1, "a second keep of one id must replace the record, not add one"
        assert kept[0].error is not None
        assert kept[0].error.message == "second"
        assert kept[0].headers[KEPT_HEADER] == "2"
        found = transport.find(stored.id)
        assert found is not None
        assert found.error == kept[0].error
        assert transport.remove(stored.id) is True
        assert transport.find(stored.id) is None
        assert transport.keep(stored) == 1

    def test_a_dead_holders_message_comes_back_after_the_lease(self, queue: str) -> None:
        """``lease=`` in the DSN: how long a dead worker's message stays invisible."""
        holder = self.make_transport(queue, contract_serializer(), lease=str(self.lease))
        holder.setup()
        holder.send(self.envelope(9))
        taken = self.receive_one(holder)
        assert taken.envelope is not None
        started = time.monotonic()
        holder.close()  # dies holding it: no ack, no release
        other = self.make_transport(queue, contract_serializer(), lease=str(self.lease))
        try:
            again = self.receive_n(other, 1, timeout=self.lease + self.receive_timeout)
            assert again, f"a dead holder's message did not come back within lease={self.lease}s"
            assert again[0].envelope is not None
            assert again[0].envelope.id == taken.envelope.id
            if transport_keeps_leases(other):
                assert time.monotonic() - started >= self.lease * 0.8, "came back before the lease"
            other.ack(again[0])
        finally:
            other.close()

    def test_ttr_is_the_messages_own_lease(self, queue: str) -> None:
        """``bus.dispatch(msg, ttr=...)``: that message's lease, where the transport has it."""
        transport = self.make_transport(queue, contract_serializer(), lease="60")
        transport.setup()
        try:
            if not transport.capabilities.ttr:
                bus = Bus(transports={"t": transport}, routing={ContractMessage: "t"})
                with pytest.raises(ConfigurationError, match="ttr"):
                    bus.dispatch(ContractMessage(n=1), ttr=self.lease)
                return
            transport.send(self.envelope(1, ttr=self.lease))
            taken = self.receive_one(transport)
            assert taken.envelope is not None
            assert taken.envelope.ttr == self.lease
            again = self.receive_n(transport, 1, timeout=self.lease + self.receive_timeout)
            assert again, "the message's own ttr (not the 60 s lease) should have lapsed"
            assert again[0].envelope is not None
            assert again[0].envelope.id == taken.envelope.id
            transport.ack(again[0])
        finally:
            transport.close()

    def test_a_thousand_messages_no_loss_no_duplicate(self, transport: Transport) -> None:
        batch = [self.envelope(n) for n in range(1000)]
        for start in range(0, 1000, 100):
            transport.send_many(batch[start : start + 100])
        # Acknowledge as the worker does, chunk by chunk: a broker may hand out
        # no more than its prefetch ahead of the acknowledgements.
        received: list[Received] = []
        deadline = time.monotonic() + max(self.receive_timeout, 30.0)
        while len(received) < 1000 and time.monotonic() < deadline:
            chunk = self.receive_n(transport, min(100, 1000 - len(received)))
            transport.ack_many(chunk)
            received += chunk
        ids = [r.envelope.id for r in received if r.envelope is not None]
        assert len(ids) == 1000
        assert set(ids) == {e.id for e in batch}
        self.assert_empty(transport)


def transport_keeps_leases(transport: Transport) -> bool:
    """Whether a dead holder's message waits for its lease (not given back at disconnect)."""
    return transport.capabilities.lease and (
        transport.capabilities.unacked_on_reconnect is Unacked.KEPT
    )
