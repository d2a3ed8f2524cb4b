"""Bad input and failures for good: kept in the dead-letter stores, acked only after."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import (
    ConfigurationError,
    ConnectionLost,
    Envelope,
    InvalidMessage,
    Message,
    RetryStrategy,
)
from courier.dead_letters import record_id
from courier.events import MessageFailed, TransportFailed, WorkerEvent
from courier.serializer import Headers
from courier.transports.base import Capabilities, Outcome, QueueStats, Received
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from courier import Bus
    from courier.worker import Worker


class SendEmail(Message):
    message_name: ClassVar[str] = "test.dead.send"

    to: str


TYPE = {Headers.TYPE: "test.dead.send", Headers.ID: "raw-1"}
DEEP = b'{"to": "a", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"

#: (body, headers, words of the reason) for every way bytes fail to become a message.
BAD_INPUT = [
    pytest.param(b'{"to": "a', TYPE, "malformed JSON", id="truncated-json"),
    pytest.param(b'{"to": "\xc3\x28"}', TYPE, "malformed JSON", id="invalid-utf8"),
    pytest.param(DEEP, TYPE, "recursion limit", id="nesting-10000"),
    pytest.param(b'["to", "a"]', TYPE, "not a JSON object", id="array"),
    pytest.param(b'"to a"', TYPE, "not a JSON object", id="string"),
    pytest.param(b"", TYPE, "malformed JSON", id="empty"),
    pytest.param(
        b'{"to": "a"}',
        {**TYPE, Headers.TYPE: "os.system"},
        "unknown message type",
        id="unknown-type",
    ),
    pytest.param(
        b'{"to": "a"}', {**TYPE, Headers.TYPE: "../../x"}, "invalid message type", id="path-type"
    ),
    pytest.param(b'{"to": "a"}', {Headers.ID: "raw-1"}, "no courier-type", id="no-type"),
    pytest.param(
        b'{"to": "a"}',
        {**TYPE, "content-type": "application/x-php-serialized"},
        "content type",
        id="content-type",
    ),
    pytest.param(
        b'{"to": "' + b"a" * 40_000 + b'"}',
        TYPE,
        "exceeds the limit of 32768 bytes",
        id="too-large",
    ),
    pytest.param(b'{"to": 42}', TYPE, "to: string_type", id="schema-invalid"),
]


class Journal(MemoryTransport):
    """Shares one journal of writes and acknowledgements with its siblings."""

    journal: list[str]

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        self.journal.append(f"send to {self.name}")
        return super().send(envelope, queue)

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        self.journal.append(f"send to {self.name}")
        return super().keep(envelope, queue)

    def ack_many(self, received: Sequence[Received]) -> None:
        self.journal.extend(f"ack on {self.name}" for _ in received)
        super().ack_many(received)


class Unreachable(MemoryTransport):
    """A store whose broker is down until ``down`` is cleared."""

    down = True

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        if self.down:
            raise ConnectionLost("the failure store is unreachable")
        return super().send(envelope, queue)

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        if self.down:
            raise ConnectionLost("the failure store is unreachable")
        return super().keep(envelope, queue)


@pytest.fixture
def bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus(failure_transport="failed", invalid_transport="invalid", max_body=32_768)
    journal: list[str] = []
    for name in ("jobs", "failed", "invalid"):
        transport = add_memory(bus, name, cls=Journal)
        assert isinstance(transport, Journal)
        transport.journal = journal
    bus.route(SendEmail, "jobs")
    return bus


def memory(bus: Bus, name: str) -> MemoryTransport:
    transport = bus.transport(name)
    assert isinstance(transport, MemoryTransport)
    return transport


def empty(queue: str) -> QueueStats:
    return QueueStats(queue, ready=0, in_flight=0, delayed=0, dead=0)


@pytest.mark.parametrize(("body", "headers", "reason"), BAD_INPUT)
def test_bad_input_ends_in_the_invalid_transport_and_the_worker_goes_on(
    bus: Bus,
    run_worker: Callable[..., Worker],
    body: bytes,
    headers: dict[str, str],
    reason: str,
) -> None:
    handled: list[str] = []
    bus.add_handler(lambda message: handled.append(message.to), SendEmail)
    jobs = memory(bus, "jobs")
    jobs.send_raw(body, headers)
    bus.dispatch(SendEmail(to="good@example.com"))

    worker = run_worker(bus, ["jobs"])

    assert handled == ["good@example.com"]  # never the bad one, and the good one after it
    [kept] = memory(bus, "invalid").list()
    assert isinstance(kept.message, InvalidMessage)
    limit = bus.serializer.max_body
    if len(body) > limit:
        # Kept up to the decoder's limit, with the size and a hash of the whole.
        assert kept.message.body == body[:limit]
        assert f"kept the first {limit} of {len(body)} bytes; sha256 " in kept.message.reason
    else:
        assert kept.message.body == body
    assert kept.message.headers == headers
    assert reason in kept.message.reason
    assert (kept.message.transport, kept.message.queue) == ("jobs", "jobs")
    assert kept.error is not None
    assert kept.error.short_class in {"MessageDecodingFailed", "ValidationFailed"}
    assert kept.error.message == kept.message.reason
    # The record's id is the claimed id and a digest, not the claimed id alone.
    claimed = headers.get(Headers.ID)
    assert kept.id != claimed
    if claimed:
        assert kept.id.startswith(f"{claimed}.")
    assert memory(bus, "failed").list() == []
    assert jobs.stats() == [empty("jobs")]  # the original was acknowledged
    assert (worker.handled, worker.failed) == (1, 1)
    assert isinstance(jobs, Journal)
    journal = jobs.journal
    assert journal.index("send to invalid") < journal.index("ack on jobs")


@pytest.mark.parametrize(("body", "headers", "reason"), BAD_INPUT)
def test_nothing_escapes_the_consume_path(
    bus: Bus, body: bytes, headers: dict[str, str], reason: str
) -> None:
    jobs = memory(bus, "jobs")
    jobs.send_raw(body, headers)
    [received] = jobs.receive()
    assert received.envelope is None
    assert received.raw == body
    assert received.error is not None
    assert reason in str(received.error)
    assert bus.consume(received) is Outcome.DEAD_LETTERED
    assert received.failure is received.error


def test_every_bad_message_is_kept_in_order(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    bus.add_handler(lambda message: None, SendEmail)
    jobs = memory(bus, "jobs")
    limit = bus.serializer.max_body
    # An oversized body is kept up to the decoder's limit.
    bodies = [param.values[0][:limit] for param in BAD_INPUT]  # type: ignore[index]
    for param in BAD_INPUT:
        body, headers, _ = param.values
        jobs.send_raw(body, headers)  # type: ignore[arg-type]
    worker = run_worker(bus, ["jobs"])
    kept = [e.message for e in memory(bus, "invalid").list()]
    assert [m.body for m in kept if isinstance(m, InvalidMessage)] == bodies
    assert len(kept) == len(bodies)
    assert worker.failed == len(bodies)
    assert jobs.stats() == [empty("jobs")]


def test_the_raw_bytes_survive_a_serializing_store(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(failure_transport="failed")
    jobs = add_memory(bus, "jobs")
    failed = add_memory(bus, "failed", serialize=True)
    bus.route(SendEmail, "jobs")
    bus.add_handler(lambda message: None, SendEmail)
    body = b'\x00\xff{"to": \xfe'
    jobs.send_raw(body, {Headers.TYPE: "test.dead.send", "x-from": "php"})
    run_worker(bus, ["jobs"])
    # No invalid transport configured: the failure transport takes undecodable bytes too.
    [kept] = failed.list()
    assert isinstance(kept.message, InvalidMessage)
    assert kept.message.body == body
    assert kept.message.headers == {Headers.TYPE: "test.dead.send", "x-from": "php"}


def test_without_dead_letter_stores_the_broker_rejects_with_the_reason(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    bus.add_handler(lambda message: None, SendEmail)
    jobs.send_raw(b"[1, 2]", {Headers.TYPE: "test.dead.send", Headers.ID: "x"})
    worker = run_worker(bus, ["jobs"])
    assert list(jobs.rejected) == [(None, "the body is not a JSON object")]
    assert jobs.stats() == [QueueStats("jobs", ready=0, in_flight=0, delayed=0, dead=1)]
    assert worker.failed == 1


@pytest.mark.parametrize("store", ["invalid", "failed"])
def test_the_original_is_not_acked_when_the_dead_letter_write_fails(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
    make_worker: Callable[..., Worker],
    store: str,
) -> None:
    bus = make_bus(
        failure_transport="failed", invalid_transport="invalid", retry=RetryStrategy(max_retries=0)
    )
    jobs = add_memory(bus, "jobs")
    failed = add_memory(bus, "failed", cls=Unreachable)
    invalid = add_memory(bus, "invalid", cls=Unreachable)
    bus.route(SendEmail, "jobs")
    runs: list[str] = []

    def send(message: SendEmail) -> None:
        runs.append(message.to)
        raise ValueError("bad address")

    bus.add_handler(send, SendEmail)
    if store == "invalid":
        jobs.send_raw(b"{", {Headers.TYPE: "test.dead.send", Headers.ID: "x"})
    else:
        bus.dispatch(SendEmail(to="a"), id="poison")
    events: list[WorkerEvent] = []
    worker = make_worker(bus, ["jobs"], listeners=[events.append])

    def stop_on_the_first_broker_error(event: WorkerEvent) -> None:
        if isinstance(event, TransportFailed):
            worker.stop()

    worker.add_listener(stop_on_the_first_broker_error)
    worker.run()

    # Not acknowledged: given back to the broker at once, to come again.
    assert jobs.stats() == [QueueStats("jobs", ready=1, in_flight=0, delayed=0, dead=0)]
    assert list(jobs.acked) == []
    assert list(jobs.rejected) == []
    assert worker.handled == 0
    [failure] = [e for e in events if isinstance(e, TransportFailed)]
    assert failure.transport == "jobs"
    assert isinstance(failure.error, ConnectionLost)
    assert not [e for e in events if isinstance(e, MessageFailed)]

    # With the store reachable again it ends where it should.
    for transport in (failed, invalid):
        assert isinstance(transport, Unreachable)
        transport.down = False
    run_worker(bus, ["jobs"])
    kept = memory(bus, store).list()
    assert len(kept) == 1
    assert jobs.stats() == [empty("jobs")]
    if store == "failed":
        assert runs == ["a", "a"]  # the unsettled first run is redelivered and runs again
        assert kept[0].id == "poison"
        assert kept[0].error is not None
        assert kept[0].error.message == "bad address"


def test_a_failure_transport_must_be_listable(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus(failure_transport="failed")
    add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    failed.capabilities = Capabilities(listable=False)
    with pytest.raises(ConfigurationError, match="failure transport 'failed' cannot list"):
        bus.check(["jobs"])


def test_an_unknown_failure_transport_is_an_error(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus(failure_transport="nowhere")
    add_memory(bus, "jobs")
    with pytest.raises(ConfigurationError, match="unknown transport 'nowhere'"):
        bus.check(["jobs"])


def test_the_invalid_transport_defaults_to_the_failure_transport(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus(failure_transport="failed")
    assert (bus.failure_transport, bus.invalid_transport) == ("failed", "failed")
    bus.set_dead_letters("f2", "i2")
    assert (bus.failure_transport, bus.invalid_transport) == ("f2", "i2")


def test_a_records_id_follows_the_physical_message() -> None:
    headers = {Headers.ID: "claimed-1", Headers.TYPE: "x"}
    # The broker's key for the message decides: a redelivered copy replaces
    # its record, while identical bytes sent twice are two records.
    assert record_id("q", headers, "row-1") == record_id("q", headers, "row-1")
    assert record_id("q", headers, "row-1") != record_id("q", headers, "row-2")
    assert record_id("q", headers, "row-1") != record_id("other", headers, "row-1")
    # Without one, every record is new.
    assert record_id("q", headers) != record_id("q", headers)
    assert record_id("q", headers, "row-1").startswith("claimed-1.")
    hostile = {Headers.ID: "../../x\n<script>"}
    assert len(record_id("q", hostile)) == 32  # a claim that is not plain is left out
