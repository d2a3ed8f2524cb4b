"""Dispatching: options reach the transport, capabilities are checked, batches go out whole."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import (
    ConfigurationError,
    ConnectionLost,
    Envelope,
    Event,
    Message,
    MessageTooLarge,
    PublishNotConfirmed,
)
from courier.transports.base import Capabilities
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from courier import Bus


class SendEmail(Message):
    message_name: ClassVar[str] = "test.dispatch.send"

    to: str


class Resize(Message):
    message_name: ClassVar[str] = "test.dispatch.resize"

    width: int


class Happened(Event):
    message_name: ClassVar[str] = "test.dispatch.happened"

    n: int = 0


class Batching(MemoryTransport):
    """Counts ``send_many`` calls, and refuses the messages ``refuse`` picks."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.batches: list[tuple[str | None, list[str]]] = []
        self.refuse: Callable[[Message], bool] = lambda message: False
        self.refused: list[str] = []

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        self.batches.append((queue, [e.id for e in envelopes]))
        return super().send_many(envelopes, queue)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        if self.refuse(envelope.message):
            self.refused.append(envelope.id)
            raise ConnectionLost("the broker hung up")
        return super().send(envelope, queue)


class Plain(MemoryTransport):
    """A broker with no delays and no priorities."""

    capabilities = Capabilities(durable=False, listable=True)


def test_dispatch_returns_the_envelope_the_transport_got(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    envelope = bus.dispatch(
        SendEmail(to="a"),
        delay=timedelta(seconds=30),
        priority=7,
        headers={"x-tenant": "acme"},
        id="my-id",
        correlation_id="c-1",
    )
    assert list(jobs.sent) == [envelope]
    assert envelope.id == "my-id"
    assert (envelope.delay, envelope.priority, envelope.ttr) == (30.0, 7, None)
    assert dict(envelope.headers) == {"x-tenant": "acme"}
    assert envelope.correlation_id == "c-1"
    assert envelope.causation_id is None
    [stats] = jobs.stats()
    assert (stats.ready, stats.delayed) == (0, 1)


def test_only_messages_can_be_dispatched(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(TypeError, match="only dispatch courier Messages"):
        make_bus().dispatch({"to": "a"})  # type: ignore[arg-type]


def test_bad_options_fail_before_sending(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    with pytest.raises(ConfigurationError, match="priority"):
        bus.dispatch(SendEmail(to="a"), priority=10)
    with pytest.raises(ConfigurationError, match="negative"):
        bus.dispatch(SendEmail(to="a"), delay=-1)
    assert list(jobs.sent) == []


def test_a_transport_without_delay_or_priority_refuses_them(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    plain = add_memory(bus, "plain", cls=Plain)
    bus.route(SendEmail, "plain")
    with pytest.raises(ConfigurationError, match="cannot delay"):
        bus.dispatch(SendEmail(to="a"), delay=5)
    with pytest.raises(ConfigurationError, match="no message priorities"):
        bus.dispatch(SendEmail(to="a"), priority=5)
    with pytest.raises(ConfigurationError, match="cannot delay"):
        bus.dispatch_many([SendEmail(to="a")], delay=5)
    assert list(plain.sent) == []
    bus.dispatch(SendEmail(to="ok"))
    assert [e.message for e in plain.sent] == [SendEmail(to="ok")]


def test_a_delay_above_the_transport_maximum_is_refused(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    jobs.capabilities = Capabilities(delay=True, max_delay=900.0)
    bus.route(SendEmail, "jobs")
    bus.dispatch(SendEmail(to="a"), delay=900)
    with pytest.raises(ConfigurationError, match="delays at most 900s"):
        bus.dispatch(SendEmail(to="a"), delay=901)


def test_an_oversized_message_is_refused_before_it_is_queued(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs", max_message_size=100)
    bus.route(SendEmail, "jobs")
    with pytest.raises(MessageTooLarge, match="exceeds the transport's limit of 100 bytes"):
        bus.dispatch(SendEmail(to="x" * 200))
    assert list(jobs.sent) == []
    assert jobs.stats()[0].ready == 0


# -- dispatch_many -------------------------------------------------------------------


@pytest.fixture
def batching_bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus()
    add_memory(bus, "jobs", cls=Batching)
    add_memory(bus, "images", cls=Batching)
    bus.route(SendEmail, "jobs")
    bus.route(Resize, "images", queue="resize")
    return bus


def batching(bus: Bus, name: str) -> Batching:
    transport = bus.transport(name)
    assert isinstance(transport, Batching)
    return transport


def test_dispatch_many_sends_one_batch_per_transport_and_queue(batching_bus: Bus) -> None:
    messages: list[Message] = [SendEmail(to=str(n)) for n in range(5)]
    messages += [Resize(width=n) for n in range(3)]
    envelopes = batching_bus.dispatch_many(messages)
    assert [e.message for e in envelopes] == messages
    jobs, images = batching(batching_bus, "jobs"), batching(batching_bus, "images")
    assert jobs.batches == [(None, [e.id for e in envelopes[:5]])]
    assert images.batches == [("resize", [e.id for e in envelopes[5:]])]
    assert [e.id for e in jobs.sent] == [e.id for e in envelopes[:5]]
    assert [s.ready for s in images.stats(["resize"])] == [3]


def test_dispatch_many_applies_options_to_each(batching_bus: Bus) -> None:
    envelopes = batching_bus.dispatch_many(
        [SendEmail(to="a"), SendEmail(to="b")], priority=3, headers={"x-batch": "1"}
    )
    assert [(e.priority, dict(e.headers)) for e in envelopes] == [(3, {"x-batch": "1"})] * 2
    assert len({e.id for e in envelopes}) == 2


def test_partial_failure_names_exactly_the_failed_ids(batching_bus: Bus) -> None:
    jobs, images = batching(batching_bus, "jobs"), batching(batching_bus, "images")
    jobs.refuse = lambda message: message in (SendEmail(to="1"), SendEmail(to="3"))
    messages: list[Message] = [SendEmail(to=str(n)) for n in range(5)]
    messages.append(Resize(width=1))
    with pytest.raises(PublishNotConfirmed, match="2 of 6 messages were not sent") as caught:
        batching_bus.dispatch_many(messages)
    assert len(jobs.batches) == 1
    assert sorted(caught.value.failed_ids) == sorted(jobs.refused)
    assert len(jobs.refused) == 2
    assert [e.message for e in jobs.sent] == [
        SendEmail(to="0"),
        SendEmail(to="2"),
        SendEmail(to="4"),
    ]
    assert [e.message for e in images.sent] == [Resize(width=1)]
    assert set(caught.value.failed_ids).isdisjoint(e.id for e in jobs.sent)
    # The count is said once, then why: not "2 of 6 ...: 2 of 5 ...: ...".
    assert str(caught.value) == "2 of 6 messages were not sent: the broker hung up"


def test_a_whole_failed_batch_leaves_the_other_transports_sent(batching_bus: Bus) -> None:
    jobs, images = batching(batching_bus, "jobs"), batching(batching_bus, "images")

    def down(envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        raise PublishNotConfirmed("no confirms", [e.id for e in envelopes])

    images.send_many = down  # type: ignore[method-assign]
    with pytest.raises(PublishNotConfirmed) as caught:
        batching_bus.dispatch_many([Resize(width=1), SendEmail(to="a"), Resize(width=2)])
    assert len(caught.value.failed_ids) == 2
    assert [e.message for e in jobs.sent] == [SendEmail(to="a")]
    assert list(images.sent) == []


def test_dispatch_many_publishes_events_and_handles_unrouted_in_process(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    events = add_memory(bus, "events")
    bus.route(Happened, "events")
    bus.add_handler(lambda event: None, Happened, "audit")
    handled: list[int] = []
    bus.add_handler(lambda resize: handled.append(resize.width), Resize)
    envelopes = bus.dispatch_many([Happened(n=1), Resize(width=4), Happened(n=2)])
    assert handled == [4]
    assert [s.ready for s in events.stats(["test.dispatch.happened.audit"])] == [2]
    assert [e.type for e in envelopes] == [
        "test.dispatch.happened",
        "test.dispatch.resize",
        "test.dispatch.happened",
    ]


def test_a_failed_publish_in_a_batch_is_named(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    events = add_memory(bus, "events", cls=Batching)
    assert isinstance(events, Batching)
    bus.route(Happened, "events")
    bus.add_handler(lambda event: None, Happened, "audit")
    events.refuse = lambda message: message == Happened(n=2)
    with pytest.raises(PublishNotConfirmed) as caught:
        bus.dispatch_many([Happened(n=1), Happened(n=2)])
    assert list(caught.value.failed_ids) == events.refused
    assert [e.message for e in events.sent] == [Happened(n=1)]
