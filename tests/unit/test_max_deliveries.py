"""Without a status store, the broker's delivery count alone decides (the fallback).

With one, worker deaths decide: see test_poison.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import (
    AckPolicy,
    ConfigurationError,
    DeliveryLimitExceeded,
    Envelope,
    Message,
    UnrecoverableError,
)
from courier.middleware.max_deliveries import DEFAULT_MAX_DELIVERIES, MaxDeliveriesMiddleware
from courier.middleware.retry import RetryStrategy
from courier.poison import PoisonGuard
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus
    from courier.worker import Worker


class Crash(Message):
    message_name: ClassVar[str] = "test.deliveries.crash"

    n: int


def redeliver(transport: MemoryTransport, times: int) -> None:
    """Hand the queue's first message out ``times`` times without settling it.

    What a worker killed mid-handler looks like to the broker.
    """
    for expected in range(1, times + 1):
        [received] = transport.receive(max=1)
        assert received.delivery_count == expected
        transport.release(received)


@pytest.fixture
def bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus(max_deliveries=3, failure_transport="failed")
    add_memory(bus, "jobs")
    add_memory(bus, "failed")
    bus.route(Crash, "jobs")
    return bus


def memory(bus: Bus, name: str) -> MemoryTransport:
    transport = bus.transport(name)
    assert isinstance(transport, MemoryTransport)
    return transport


def test_default_and_bounds() -> None:
    assert DEFAULT_MAX_DELIVERIES == 10
    assert PoisonGuard(lambda: None).max_deliveries == 10
    with pytest.raises(ConfigurationError, match="at least 1"):
        PoisonGuard(lambda: None, 0)


def test_past_the_limit_it_is_dead_lettered_before_the_handler_runs(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled: list[int] = []
    bus.add_handler(lambda message: handled.append(message.n), Crash)
    poison = bus.dispatch(Crash(n=1))
    jobs = memory(bus, "jobs")
    redeliver(jobs, 3)
    worker = run_worker(bus, ["jobs"])
    assert handled == []
    [kept] = memory(bus, "failed").list()
    assert kept.id == poison.id
    assert kept.attempt == 1  # never a handler failure: the attempt count did not move
    assert kept.error is not None
    assert kept.error.short_class == "DeliveryLimitExceeded"
    assert "delivered 4 times, more than max_deliveries=3" in kept.error.message
    assert jobs.stats()[0].in_flight == 0
    assert worker.failed == 1


def test_at_the_limit_the_handler_still_runs(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    handled: list[int] = []
    bus.add_handler(lambda message: handled.append(message.n), Crash)
    bus.dispatch(Crash(n=1))
    redeliver(memory(bus, "jobs"), 2)
    run_worker(bus, ["jobs"])
    assert handled == [1]
    assert memory(bus, "failed").list() == []


def test_healthy_messages_around_it_flow_on(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    handled: list[int] = []
    bus.add_handler(lambda message: handled.append(message.n), Crash)
    bus.dispatch(Crash(n=1))
    redeliver(memory(bus, "jobs"), 3)
    bus.dispatch(Crash(n=2))
    bus.dispatch(Crash(n=3))
    run_worker(bus, ["jobs"])
    assert handled == [2, 3]
    assert [e.message for e in memory(bus, "failed").list()] == [Crash(n=1)]


@pytest.mark.parametrize("policy", list(AckPolicy))
def test_the_limit_dead_letters_whatever_the_ack_policy(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
    policy: AckPolicy,
) -> None:
    bus = make_bus(max_deliveries=1, failure_transport="failed", ack_policy=policy)
    jobs = add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    bus.route(Crash, "jobs")
    bus.add_handler(lambda message: None, Crash)
    bus.dispatch(Crash(n=1))
    redeliver(jobs, 1)
    run_worker(bus, ["jobs"])
    [kept] = failed.list()
    assert kept.error is not None
    assert kept.error.short_class == "DeliveryLimitExceeded"


def test_nacked_failures_are_bounded_by_the_delivery_count(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(
        max_deliveries=4,
        failure_transport="failed",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        retry=RetryStrategy(max_retries=0),
    )
    add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    bus.route(Crash, "jobs")
    deliveries: list[int] = []

    def crash(message: Crash, envelope: Envelope) -> None:
        assert envelope.received is not None
        deliveries.append(envelope.received.delivery_count)
        raise ConnectionError("down")

    bus.add_handler(crash, Crash)
    bus.dispatch(Crash(n=1))
    run_worker(bus, ["jobs"])
    assert deliveries == [1, 2, 3, 4]
    [kept] = failed.list()
    assert kept.error is not None
    assert kept.error.short_class == "DeliveryLimitExceeded"


def test_the_middleware_alone() -> None:
    calls: list[Envelope] = []

    def following(envelope: Envelope) -> Envelope:
        calls.append(envelope)
        return envelope

    envelope = Envelope(Crash(n=1))
    # Without a delivery (dispatch side) there is nothing to count.
    middleware = MaxDeliveriesMiddleware(PoisonGuard(lambda: None, 1))
    assert middleware.handle(envelope, following) is envelope
    assert calls == [envelope]
    # Unrecoverable: the retry middleware never retries it.
    assert issubclass(DeliveryLimitExceeded, UnrecoverableError)
