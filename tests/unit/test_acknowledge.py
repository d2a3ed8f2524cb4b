"""Acknowledge policies: what a failure that reached the end of the retries becomes."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import AckPolicy, ConnectionLost, Envelope, Message, RetryStrategy, UnrecoverableError
from courier.transports.base import Outcome, QueueStats

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus
    from courier.transports.memory import MemoryTransport
    from courier.worker import Worker


class Charge(Message):
    message_name: ClassVar[str] = "test.ack.charge"

    amount: int


def failing_once(runs: list[tuple[int, int]]) -> Callable[[Charge, Envelope], None]:
    def charge(message: Charge, envelope: Envelope) -> None:
        assert envelope.received is not None
        runs.append((envelope.attempt, envelope.received.delivery_count))
        if len(runs) == 1:
            raise ValueError("card declined")

    return charge


def setup(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    policy: AckPolicy,
    *,
    failure_transport: str | None = "failed",
    retries: int = 0,
) -> tuple[Bus, MemoryTransport, MemoryTransport]:
    bus = make_bus(
        ack_policy=policy,
        failure_transport=failure_transport,
        retry=RetryStrategy(max_retries=retries, delay=0),
    )
    jobs = add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    bus.route(Charge, "jobs")
    return bus, jobs, failed


def test_the_default_policy_dead_letters(make_bus: Callable[..., Bus]) -> None:
    assert make_bus().ack_policy is AckPolicy.REJECT_ON_ERROR


def test_reject_on_error_keeps_it_in_the_failure_transport_then_acks(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus, jobs, failed = setup(make_bus, add_memory, AckPolicy.REJECT_ON_ERROR)
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    sent = bus.dispatch(Charge(amount=5))
    run_worker(bus, ["jobs"])
    assert runs == [(1, 1)]
    [kept] = failed.list()
    assert kept.id == sent.id
    assert kept.error is not None
    assert kept.error.message == "card declined"
    assert [e.id for e in jobs.acked] == [sent.id]
    assert jobs.stats() == [QueueStats("jobs", ready=0, in_flight=0, delayed=0, dead=0)]


def test_without_failure_transport_the_broker_rejects_with_the_reason(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus, jobs, failed = setup(
        make_bus, add_memory, AckPolicy.REJECT_ON_ERROR, failure_transport=None
    )
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    sent = bus.dispatch(Charge(amount=5))
    run_worker(bus, ["jobs"])
    [(envelope, reason)] = jobs.rejected
    assert envelope is not None
    assert envelope.id == sent.id
    assert reason == "ValueError: card declined"
    assert list(jobs.acked) == []
    assert failed.list() == []
    assert jobs.stats() == [QueueStats("jobs", ready=0, in_flight=0, delayed=0, dead=1)]


def test_ack_policy_drops_the_failed_message(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus, jobs, failed = setup(make_bus, add_memory, AckPolicy.ACK)
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    sent = bus.dispatch(Charge(amount=5))
    worker = run_worker(bus, ["jobs"])
    assert runs == [(1, 1)]
    assert [e.id for e in jobs.acked] == [sent.id]
    assert failed.list() == []
    assert list(jobs.rejected) == []
    assert worker.failed == 1


def test_nack_on_error_gives_it_back_to_the_broker_at_once(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus, jobs, failed = setup(make_bus, add_memory, AckPolicy.NACK_ON_ERROR)
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    sent = bus.dispatch(Charge(amount=5))
    run_worker(bus, ["jobs"])
    # Redelivered as the same message: the delivery count rose, the attempt did not.
    assert runs == [(1, 1), (1, 2)]
    assert [e.id for e in jobs.acked] == [sent.id]
    assert failed.list() == []


def test_retries_come_before_the_policy(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus, _jobs, _failed = setup(make_bus, add_memory, AckPolicy.NACK_ON_ERROR, retries=2)
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    bus.dispatch(Charge(amount=5))
    run_worker(bus, ["jobs"])
    assert runs == [(1, 1), (2, 1)]  # a retry is a new message, not a redelivery


@pytest.mark.parametrize(
    ("policy", "failure_transport", "outcome"),
    [
        (AckPolicy.REJECT_ON_ERROR, "failed", Outcome.DEAD_LETTERED),
        (AckPolicy.REJECT_ON_ERROR, None, Outcome.REJECTED),
        (AckPolicy.NACK_ON_ERROR, "failed", Outcome.RELEASED),
        (AckPolicy.ACK, "failed", Outcome.ACK),
    ],
)
def test_the_outcome_of_a_failure(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    policy: AckPolicy,
    failure_transport: str | None,
    outcome: Outcome,
) -> None:
    bus, jobs, _ = setup(make_bus, add_memory, policy, failure_transport=failure_transport)

    def charge(message: Charge) -> None:
        raise UnrecoverableError("stolen card")

    bus.add_handler(charge, Charge)
    bus.dispatch(Charge(amount=1))
    [received] = jobs.receive()
    assert bus.consume(received) is outcome
    assert received.outcome is outcome
    assert isinstance(received.failure, Exception)
    assert "stolen card" in str(received.failure)


def test_the_outcome_of_success_and_retry(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus, jobs, _ = setup(make_bus, add_memory, AckPolicy.REJECT_ON_ERROR, retries=1)
    runs: list[tuple[int, int]] = []
    bus.add_handler(failing_once(runs), Charge)
    bus.dispatch(Charge(amount=1))
    [first] = jobs.receive()
    assert bus.consume(first) is Outcome.RETRIED
    [second] = jobs.receive()
    assert bus.consume(second) is Outcome.ACK
    assert second.failure is None
    # The worker acknowledges; consume itself only decides.
    assert jobs.stats()[0].in_flight == 1


def test_only_ack_and_dead_lettered_need_an_acknowledgement() -> None:
    assert {o for o in Outcome if o.needs_ack} == {Outcome.ACK, Outcome.DEAD_LETTERED}


def test_a_transport_error_raised_by_the_handler_is_a_handler_failure(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    # Only settling failures propagate; a handler talking to a broker of its
    # own that fails is retried like any other handler error.
    bus, jobs, _ = setup(make_bus, add_memory, AckPolicy.REJECT_ON_ERROR, retries=1)

    def charge(message: Charge) -> None:
        raise ConnectionLost("payment gateway went away")

    bus.add_handler(charge, Charge)
    bus.dispatch(Charge(amount=1))
    [received] = jobs.receive()
    assert bus.consume(received) is Outcome.RETRIED
