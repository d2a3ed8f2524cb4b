"""Routing: point to point through a worker, unrouted and sync:// in process, route rules."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import (
    ConfigurationError,
    Event,
    HandlerFailed,
    Message,
    NoHandlerForMessage,
    QueueStats,
    Route,
)
from courier.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus, Envelope
    from courier.transports.memory import MemoryTransport


class SendEmail(Message):
    message_name: ClassVar[str] = "test.routing.send"

    to: str


class SendUrgentEmail(SendEmail):
    message_name: ClassVar[str] = "test.routing.urgent"


class Resize(Message):
    message_name: ClassVar[str] = "test.routing.resize"

    width: int


class Happened(Event):
    message_name: ClassVar[str] = "test.routing.happened"


# -- point to point ----------------------------------------------------------------


def test_point_to_point_through_a_worker(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    handled: list[str] = []
    bus.add_handler(lambda message: handled.append(message.to), SendEmail)

    envelopes = [bus.dispatch(SendEmail(to=f"user{n}@example.com")) for n in range(3)]
    assert handled == []  # sent, not handled, in the dispatching process
    assert [e.id for e in jobs.sent] == [e.id for e in envelopes]

    worker = run_worker(bus, ["jobs"])
    assert handled == [f"user{n}@example.com" for n in range(3)]
    assert [e.id for e in jobs.acked] == [e.id for e in envelopes]
    assert worker.handled == 3
    assert worker.failed == 0
    assert jobs.stats() == [QueueStats("jobs", ready=0, in_flight=0, delayed=0, dead=0)]


def recorder(seen: list[str]) -> Callable[[SendEmail], None]:
    def send(message: SendEmail) -> None:
        seen.append(message.to)

    return send


def test_each_message_is_handled_by_one_of_two_workers(
    make_bus: Callable[..., Bus],
    run_worker: Callable[..., Worker],
) -> None:
    # Two processes' buses sharing one broker: each message goes to one worker only.
    dsn = f"memory://p2p-{uuid.uuid4().hex}?queue=jobs&serialize=true"
    buses = [make_bus(transports={"jobs": dsn}), make_bus(transports={"jobs": dsn})]
    handled: list[list[str]] = [[], []]
    for bus, seen in zip(buses, handled, strict=True):
        bus.route(SendEmail, "jobs")
        bus.add_handler(recorder(seen), SendEmail)
    for n in range(10):
        buses[0].dispatch(SendEmail(to=str(n)))
    run_worker(buses[0], ["jobs"], limit=4, prefetch=1)
    run_worker(buses[1], ["jobs"])
    assert len(handled[0]) == 4
    assert sorted(handled[0] + handled[1], key=int) == [str(n) for n in range(10)]


def test_a_queue_other_than_the_default(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    bus.route(Resize, "jobs", queue="images")
    handled: list[Message] = []
    bus.add_handler(handled.append, SendEmail)
    bus.add_handler(handled.append, Resize)
    bus.dispatch(Resize(width=100))
    assert [s.queue for s in jobs.stats(["jobs", "images"])] == ["jobs", "images"]
    assert [s.ready for s in jobs.stats(["jobs", "images"])] == [0, 1]
    assert bus.consumed_queues("jobs") == ["jobs", "images"]
    run_worker(bus, ["jobs"])
    assert handled == [Resize(width=100)]


def test_a_routed_command_without_handler_fails_the_check(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    with pytest.raises(ConfigurationError, match=r"test\.routing\.send is routed to 'jobs'"):
        bus.check(["jobs"])
    with pytest.raises(ConfigurationError, match="has no handler"):
        Worker(bus, ["jobs"])
    bus.add_handler(lambda message: None, SendEmail)
    bus.check(["jobs"])


def test_a_route_by_name_of_an_unknown_class_fails_the_check(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    add_memory(bus, "jobs")
    bus.route("billing.invoice", "jobs")
    with pytest.raises(ConfigurationError, match=r"'billing\.invoice'"):
        bus.check(["jobs"])


def test_routes_by_name_apply_to_the_class(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route("test.routing.send", "jobs")
    bus.dispatch(SendEmail(to="a"))
    assert [e.message for e in jobs.sent] == [SendEmail(to="a")]


def test_routing_given_to_the_bus(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(
        transports={"jobs": "memory://?queue=jobs", "events": "memory://?queue=events"},
        routing={SendEmail: "jobs", Resize: Route("jobs", queue="images"), Happened: "events"},
    )
    assert bus.router.route_for(SendEmail) == Route("jobs")
    assert bus.router.route_for(Resize) == Route("jobs", queue="images")
    assert bus.router.route_for(Happened) == Route("events")


def test_a_route_for_a_base_class_covers_subclasses_unless_they_have_their_own(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus(transports={"jobs": "memory://", "urgent": "memory://"})
    bus.route(SendEmail, "jobs")
    assert bus.router.route_for(SendUrgentEmail) == Route("jobs")
    bus.route(SendUrgentEmail, "urgent")
    assert bus.router.route_for(SendUrgentEmail) == Route("urgent")
    assert bus.router.route_for(SendEmail) == Route("jobs")


def test_the_catch_all_routes_everything_else(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"jobs": "memory://", "other": "memory://"})
    bus.route("*", "other")
    bus.route(SendEmail, "jobs")
    assert bus.router.route_for(Resize) == Route("other")
    assert bus.router.route_for(SendEmail) == Route("jobs")


def test_commands_go_to_queues_and_events_to_topics(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"jobs": "memory://"})
    with pytest.raises(ConfigurationError, match="is a command"):
        bus.route(SendEmail, "jobs", topic="emails")
    with pytest.raises(ConfigurationError, match="is an event"):
        bus.route(Happened, "jobs", queue="events")
    with pytest.raises(ConfigurationError, match="not a courier Message class"):
        bus.route(int, "jobs")  # type: ignore[arg-type]


def test_a_route_to_an_unknown_transport_fails_at_dispatch(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    bus.route(SendEmail, "nowhere")
    with pytest.raises(ConfigurationError, match="unknown transport 'nowhere'"):
        bus.dispatch(SendEmail(to="a"))


# -- in process ----------------------------------------------------------------------


def test_unrouted_messages_are_handled_in_process(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    handled: list[tuple[str, str]] = []

    @bus.handler(SendEmail)
    def send(message: SendEmail, envelope: Envelope) -> None:
        handled.append((message.to, envelope.id))

    envelope = bus.dispatch(SendEmail(to="a"))
    assert handled == [("a", envelope.id)]


def test_unrouted_handler_errors_reach_the_caller(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()

    @bus.handler(SendEmail)
    def send(message: SendEmail) -> None:
        raise LookupError("no such mailbox")

    with pytest.raises(HandlerFailed, match="LookupError: no such mailbox") as caught:
        bus.dispatch(SendEmail(to="a"))
    assert [type(e) for e in caught.value.errors] == [LookupError]


def test_unrouted_without_handler_is_an_error(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(NoHandlerForMessage, match="not routed"):
        make_bus().dispatch(SendEmail(to="a"))


def test_an_unrouted_event_without_subscriptions_is_fine(make_bus: Callable[..., Bus]) -> None:
    envelope = make_bus().dispatch(Happened())
    assert envelope.type == "test.routing.happened"


def test_sync_transport_handles_at_dispatch(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"now": "sync://"})
    bus.route(SendEmail, "now")
    handled: list[str] = []
    bus.add_handler(lambda message: handled.append(message.to), SendEmail)
    bus.dispatch(SendEmail(to="a"))
    assert handled == ["a"]


def test_sync_transport_errors_reach_the_caller_as_handler_failed(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus(transports={"now": "sync://"})
    bus.route(SendEmail, "now")
    bus.route(Happened, "now")

    def fail(message: SendEmail) -> None:
        raise ValueError("bad address")

    def first(event: Happened) -> None:
        raise KeyError("first")

    def second(event: Happened) -> None:
        raise TimeoutError("second")

    bus.add_handler(fail, SendEmail)
    bus.add_handler(first, Happened)
    bus.add_handler(second, Happened)
    with pytest.raises(HandlerFailed) as caught:
        bus.dispatch(SendEmail(to="a"))
    assert [type(e) for e in caught.value.errors] == [ValueError]
    with pytest.raises(HandlerFailed, match=r"\(and 1 more\)") as both:
        bus.dispatch(Happened())
    assert sorted(type(e).__name__ for e in both.value.errors) == ["KeyError", "TimeoutError"]


def test_sync_transport_cannot_be_consumed(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"now": "sync://"})
    with pytest.raises(ConfigurationError, match="nothing to consume"):
        bus.check(["now"])
    with pytest.raises(ConfigurationError, match="nothing to consume"):
        bus.transport("now").receive()
