"""Publish/subscribe: each subscription gets its own copy and succeeds or fails on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import ConfigurationError, Envelope, Event, RetryStrategy
from courier.transports.base import Outcome
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus
    from courier.worker import Worker


class UserRegistered(Event):
    message_name: ClassVar[str] = "user.registered"

    user: int


@pytest.fixture
def bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus(failure_transport="failed")
    add_memory(bus, "events")
    add_memory(bus, "failed")
    bus.route(UserRegistered, "events")
    return bus


def memory(bus: Bus, name: str) -> MemoryTransport:
    transport = bus.transport(name)
    assert isinstance(transport, MemoryTransport)
    return transport


def ready(bus: Bus, *queues: str) -> list[int | None]:
    return [stats.ready for stats in memory(bus, "events").stats(list(queues))]


def test_each_subscription_gets_its_own_copy(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    calls: list[tuple[str, int, str]] = []

    @bus.handler(UserRegistered, subscription="welcome-email")
    def welcome(event: UserRegistered, envelope: Envelope) -> None:
        calls.append(("welcome", event.user, envelope.id))

    @bus.handler(UserRegistered)
    def audit(event: UserRegistered, envelope: Envelope) -> None:
        calls.append(("audit", event.user, envelope.id))

    sent = bus.dispatch(UserRegistered(user=7))
    assert calls == []
    assert ready(bus, "user.registered.welcome-email", "user.registered.audit") == [1, 1]
    assert bus.consumed_queues("events") == [
        "user.registered.audit",
        "user.registered.welcome-email",
    ]
    worker = run_worker(bus, ["events"])
    assert sorted(calls) == [("audit", 7, sent.id), ("welcome", 7, sent.id)]
    assert worker.handled == 2
    assert ready(bus, "user.registered.welcome-email", "user.registered.audit") == [0, 0]


def test_one_subscription_retries_while_the_other_succeeds_once(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    welcome_attempts: list[int] = []
    audit_attempts: list[int] = []

    @bus.handler(UserRegistered, subscription="welcome")
    def welcome(event: UserRegistered, envelope: Envelope) -> None:
        welcome_attempts.append(envelope.attempt)
        if envelope.attempt < 3:
            raise ConnectionError("smtp down")

    @bus.handler(UserRegistered, subscription="audit")
    def audit(event: UserRegistered, envelope: Envelope) -> None:
        audit_attempts.append(envelope.attempt)

    bus.dispatch(UserRegistered(user=1))
    worker = run_worker(bus, ["events"])
    assert welcome_attempts == [1, 2, 3]
    assert audit_attempts == [1]
    assert (worker.handled, worker.failed, worker.retried) == (2, 0, 2)
    # The retries went back to the failing subscription's queue only.
    events = memory(bus, "events")
    retried = [e for e in events.sent if e.attempt > 1]
    assert [e.attempt for e in retried] == [2, 3]
    assert memory(bus, "failed").list() == []


def test_one_subscription_fails_for_good_alone(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    audit_calls: list[int] = []

    @bus.handler(UserRegistered, subscription="welcome")
    def welcome(event: UserRegistered) -> None:
        raise ConnectionError("smtp down")

    @bus.handler(UserRegistered, subscription="audit")
    def audit(event: UserRegistered) -> None:
        audit_calls.append(event.user)

    sent = bus.dispatch(UserRegistered(user=1))
    run_worker(bus, ["events"])
    assert audit_calls == [1]
    [kept] = memory(bus, "failed").list()
    assert kept.id == sent.id
    assert kept.error is not None
    assert kept.error.queue == "user.registered.welcome"
    assert kept.attempt == 4


def test_an_event_with_no_subscription_is_not_an_error(bus: Bus) -> None:
    envelope = bus.dispatch(UserRegistered(user=1))
    assert envelope.type == "user.registered"
    assert list(memory(bus, "events").sent) == []
    assert bus.dispatch_many([UserRegistered(user=2)])[0].type == "user.registered"
    assert list(memory(bus, "events").sent) == []


def test_configured_subscriptions_are_published_without_handlers(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    # A producer that does not import the consumers' handlers.
    producer = make_bus()
    events = add_memory(producer, "events")
    producer.route(UserRegistered, "events", topic="users", subscriptions=["billing", "crm"])
    producer.dispatch(UserRegistered(user=3))
    assert [s.ready for s in events.stats(["users.billing", "users.crm"])] == [1, 1]
    assert producer.layout("events") == ([], {"users": ["billing", "crm"]})


def test_setup_declares_every_subscription_queue(bus: Bus) -> None:
    bus.add_handler(lambda event: None, UserRegistered, "welcome")
    bus.setup(["events"])
    events = memory(bus, "events")
    assert "user.registered.welcome" in events.queues()
    assert events.subscriptions("user.registered") == ["welcome"]


def test_subscription_narrows_what_a_worker_consumes(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    calls: list[str] = []
    bus.add_handler(lambda event: calls.append("welcome"), UserRegistered, "welcome")
    bus.add_handler(lambda event: calls.append("audit"), UserRegistered, "audit")
    bus.dispatch(UserRegistered(user=1))
    worker = run_worker(bus, ["events"], subscriptions=["audit"])
    assert worker.queues == {"events": ["user.registered.audit"]}
    assert calls == ["audit"]
    assert ready(bus, "user.registered.welcome", "user.registered.audit") == [1, 0]


def test_narrowing_to_an_unknown_subscription_is_an_error(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    bus.add_handler(lambda event: None, UserRegistered, "welcome")
    with pytest.raises(ConfigurationError, match="no subscription named 'typo'"):
        run_worker(bus, ["events"], subscriptions=["typo"])


def test_a_copy_for_a_subscription_without_handler_here_is_not_consumed_and_dead_lettered(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    # Another deploy still publishes to "legacy"; this process has no such handler.
    bus.add_handler(lambda event: None, UserRegistered, "welcome")
    events = memory(bus, "events")
    events.send(Envelope(UserRegistered(user=1)), "user.registered.legacy")
    worker = run_worker(bus, ["events"])
    assert worker.handled == 0  # not a queue this process consumes
    assert ready(bus, "user.registered.legacy") == [1]
    # Handed one anyway, the bus refuses it without retrying.
    [received] = events.receive(["user.registered.legacy"])
    assert bus.consume(received) is Outcome.DEAD_LETTERED
    [kept] = memory(bus, "failed").list()
    assert kept.error is not None
    assert kept.error.short_class == "NoHandlerForMessage"
    assert "'legacy'" in kept.error.message
    assert kept.attempt == 1


def test_without_failure_transport_the_failed_copy_is_rejected_to_the_broker(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(max_retries=1, delay=0.0))
    add_memory(bus, "events")
    bus.route(UserRegistered, "events")
    attempts: list[int] = []

    def flaky(event: UserRegistered, envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        raise ConnectionError("down")

    bus.add_handler(flaky, UserRegistered, "flaky")
    bus.add_handler(lambda event: None, UserRegistered, "steady")
    bus.dispatch(UserRegistered(user=1))
    run_worker(bus, ["events"])
    assert attempts == [1, 2]
    events = memory(bus, "events")
    assert [reason for _, reason in events.rejected] == ["ConnectionError: down"]
    assert [stats.dead for stats in events.stats(["user.registered.flaky"])] == [1]
    assert [stats.dead for stats in events.stats(["user.registered.steady"])] == [0]
