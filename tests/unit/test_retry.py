"""Retries: the schedule from computed delays, attempts in headers, exhaustion, markers."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import (
    ConfigurationError,
    Envelope,
    Message,
    NoHandlerForMessage,
    RecoverableError,
    RetryPolicy,
    RetryStrategy,
    UnrecoverableError,
    ValidationFailed,
)
from courier.errors import HandlerFailed
from courier.middleware.retry import is_recoverable, should_retry
from courier.transports.base import Capabilities, QueueStats
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus
    from courier.transports.base import Received
    from courier.worker import Worker


class SendEmail(Message):
    message_name: ClassVar[str] = "test.retry.send"

    to: str


class Resize(Message):
    message_name: ClassVar[str] = "test.retry.resize"

    width: int


class DelayRecorder(MemoryTransport):
    """Records the delay of every retry, then brings the message back at once."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.delays: list[float] = []
        self.retried: list[Envelope] = []

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        self.delays.append(delay)
        self.retried.append(envelope)
        super().retry(received, envelope, 0.0)


# -- the schedule, computed ------------------------------------------------------------


def test_defaults() -> None:
    strategy = RetryStrategy()
    assert (strategy.max_retries, strategy.delay, strategy.multiplier) == (3, 1.0, 2.0)
    assert strategy.max_delay is None
    assert strategy.jitter == 0.1


def test_base_delay_grows_by_the_multiplier() -> None:
    assert [RetryStrategy().base_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    tripling = RetryStrategy(delay=0.5, multiplier=3)
    assert [tripling.base_delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]
    assert [RetryStrategy(multiplier=1).base_delay(n) for n in (1, 5)] == [1.0, 1.0]


def test_max_delay_is_a_ceiling() -> None:
    strategy = RetryStrategy(delay=1, max_delay=3, jitter=0)
    assert [strategy.base_delay(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 3.0, 3.0]
    assert [strategy.delay_for(n) for n in (1, 2, 3, 10)] == [1.0, 2.0, 3.0, 3.0]


def test_the_ceiling_also_caps_the_jitter() -> None:
    strategy = RetryStrategy(delay=10, max_delay=10, jitter=0.5)
    delays = [strategy.delay_for(1, random.Random(seed)) for seed in range(200)]
    assert max(delays) == 10.0
    assert min(delays) >= 5.0


def test_delay_for_is_reproducible_with_a_seeded_random() -> None:
    strategy = RetryStrategy()
    first = [strategy.delay_for(n, random.Random(42)) for n in (1, 2, 3)]
    again = [strategy.delay_for(n, random.Random(42)) for n in (1, 2, 3)]
    assert first == again
    for attempt, delay in zip((1, 2, 3), first, strict=True):
        base = strategy.base_delay(attempt)
        assert delay == base + random.Random(42).uniform(-0.1 * base, 0.1 * base)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_jitter_stays_within_its_fraction_and_is_used(attempt: int) -> None:
    strategy = RetryStrategy(jitter=0.1)
    base = strategy.base_delay(attempt)
    rng = random.Random(7)
    delays = [strategy.delay_for(attempt, rng) for _ in range(2000)]
    assert all(base * 0.9 <= delay <= base * 1.1 for delay in delays)
    # Spread across the range, not stuck on one value or one side.
    assert min(delays) < base * 0.92
    assert max(delays) > base * 1.08


def test_no_jitter_means_exact_delays() -> None:
    strategy = RetryStrategy(delay=0.25, jitter=0)
    assert [strategy.delay_for(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]


def test_zero_delay_stays_zero_with_jitter() -> None:
    assert RetryStrategy(delay=0, jitter=1).delay_for(3) == 0.0


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": -1},
        {"delay": -0.1},
        {"multiplier": 0.5},
        {"max_delay": -1},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_impossible_strategies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="retry"):
        RetryStrategy(**options)  # type: ignore[arg-type]


def test_strategy_by_message_type_then_transport_then_default() -> None:
    default = RetryStrategy()
    by_transport = RetryStrategy(max_retries=5)
    by_type = RetryStrategy(max_retries=0)
    policy = RetryPolicy(
        default=default,
        transports={"images": by_transport},
        message_types={"test.retry.send": by_type},
    )
    assert policy.strategy_for("images", "test.retry.send") is by_type
    assert policy.strategy_for("jobs", "test.retry.send") is by_type
    assert policy.strategy_for("images", "test.retry.resize") is by_transport
    assert policy.strategy_for("jobs", "test.retry.resize") is default


def test_what_is_retried() -> None:
    strategy = RetryStrategy(max_retries=2)
    failure = HandlerFailed([ConnectionError("down")])
    assert should_retry(failure, 1, strategy)
    assert should_retry(failure, 2, strategy)
    assert not should_retry(failure, 3, strategy)
    assert should_retry(HandlerFailed([RecoverableError("again")]), 50, strategy)
    for never in (UnrecoverableError("no"), ValidationFailed("x", []), NoHandlerForMessage("x")):
        assert not is_recoverable(HandlerFailed([never]))
        assert not should_retry(HandlerFailed([never]), 1, strategy)
    # Several failing handlers: retried unless every one of them is unrecoverable.
    mixed = HandlerFailed([UnrecoverableError("no"), ConnectionError("down")])
    assert should_retry(mixed, 1, strategy)
    assert not should_retry(
        HandlerFailed([UnrecoverableError("a"), UnrecoverableError("b")]), 1, strategy
    )


# -- end to end on memory -------------------------------------------------------------


def test_fails_three_times_then_succeeds_in_four_runs(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(), failure_transport="failed")
    jobs = add_memory(bus, "jobs", cls=DelayRecorder)
    failed = add_memory(bus, "failed")
    assert isinstance(jobs, DelayRecorder)
    bus.route(SendEmail, "jobs")
    attempts: list[int] = []
    ids: list[str] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        ids.append(envelope.id)
        if envelope.attempt <= 3:
            raise ConnectionError(f"smtp down (attempt {envelope.attempt})")

    bus.add_handler(send, SendEmail)
    sent = bus.dispatch(SendEmail(to="a"))
    worker = run_worker(bus, ["jobs"])
    assert attempts == [1, 2, 3, 4]
    assert set(ids) == {sent.id}
    # The default schedule: 1 s, 2 s, 4 s, each within 10% jitter.
    assert len(jobs.delays) == 3
    for delay, base in zip(jobs.delays, (1.0, 2.0, 4.0), strict=True):
        assert base * 0.9 <= delay <= base * 1.1
    # Each retry carries the raised attempt, its delay and why the last one failed.
    assert [e.attempt for e in jobs.retried] == [2, 3, 4]
    assert [e.delay for e in jobs.retried] == jobs.delays
    for number, envelope in enumerate(jobs.retried, start=1):
        assert envelope.error is not None
        assert envelope.error.error_class == "ConnectionError"
        assert envelope.error.message == f"smtp down (attempt {number})"
        assert envelope.received is None
    assert failed.list() == []
    assert (worker.handled, worker.failed, worker.retried) == (1, 0, 3)
    assert [e.attempt for e in jobs.acked] == [4]


def test_exhaustion_runs_max_retries_plus_one_then_dead_letters_once(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(max_retries=2, delay=0.001), failure_transport="failed")
    jobs = add_memory(bus, "jobs", cls=DelayRecorder)
    failed = add_memory(bus, "failed")
    bus.route(SendEmail, "jobs")
    runs: list[int] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        raise TimeoutError("smtp timed out")

    bus.add_handler(send, SendEmail)
    sent = bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert runs == [1, 2, 3]
    [kept] = failed.list()
    assert kept.id == sent.id
    assert kept.message == SendEmail(to="a")
    assert kept.attempt == 3
    assert kept.delay == 0.0
    assert kept.error is not None
    assert kept.error.error_class == "TimeoutError"
    assert kept.error.message == "smtp timed out"
    assert "raise TimeoutError" in kept.error.traceback
    assert 0 < len(kept.error.traceback) <= 8_100
    assert (kept.error.transport, kept.error.queue) == ("jobs", "jobs")
    # The original was acknowledged once the copy was kept, and nothing is left.
    assert jobs.stats() == [QueueStats("jobs", ready=0, in_flight=0, delayed=0, dead=0)]
    assert [e.attempt for e in jobs.acked] == [3]


def test_unrecoverable_errors_skip_retries(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(max_retries=5, delay=0.001), failure_transport="failed")
    jobs = add_memory(bus, "jobs", cls=DelayRecorder)
    failed = add_memory(bus, "failed")
    bus.route(SendEmail, "jobs")
    runs: list[int] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        raise UnrecoverableError("address does not exist")

    bus.add_handler(send, SendEmail)
    bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert runs == [1]
    assert isinstance(jobs, DelayRecorder)
    assert jobs.delays == []
    [kept] = failed.list()
    assert kept.error is not None
    assert kept.error.error_class == "courier.errors.UnrecoverableError"


def test_recoverable_errors_retry_past_the_budget(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(max_retries=1, delay=0.001))
    add_memory(bus, "jobs", cls=DelayRecorder)
    bus.route(SendEmail, "jobs")
    runs: list[int] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        if envelope.attempt < 6:
            raise RecoverableError("rate limited, come back")

    bus.add_handler(send, SendEmail)
    bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert runs == [1, 2, 3, 4, 5, 6]


def test_endless_retries_never_overflow_the_delay() -> None:
    strategy = RetryStrategy(delay=1.0, multiplier=2.0, max_delay=3600.0)
    assert strategy.base_delay(2000) == 3600.0
    assert RetryStrategy(delay=1.0).base_delay(5000) == 2.0**64


def test_a_retry_waits_no_longer_than_the_transport_can_delay(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    # Within its budget the strategy fits the transport (the startup check
    # says so); RecoverableError retries past the budget, where it would not.
    strategy = RetryStrategy(max_retries=1, delay=0.0005, multiplier=100.0, jitter=0.0)
    bus = make_bus(retry=strategy)
    jobs = add_memory(bus, "jobs", cls=DelayRecorder)
    jobs.capabilities = replace(jobs.capabilities, max_delay=0.001)
    bus.route(SendEmail, "jobs")
    runs: list[int] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        if envelope.attempt < 3:
            raise RecoverableError("come back")

    bus.add_handler(send, SendEmail)
    bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert runs == [1, 2, 3]
    assert jobs.delays == [0.0005, 0.001]


def test_strategies_per_transport_and_per_message_type(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    policy = RetryPolicy(
        default=RetryStrategy(max_retries=0),
        transports={"images": RetryStrategy(max_retries=2, delay=0.5, jitter=0)},
        message_types={"test.retry.send": RetryStrategy(max_retries=1, delay=0.25, jitter=0)},
    )
    bus = make_bus(retry=policy)
    jobs = add_memory(bus, "jobs", cls=DelayRecorder)
    images = add_memory(bus, "images", cls=DelayRecorder)
    assert isinstance(jobs, DelayRecorder)
    assert isinstance(images, DelayRecorder)
    bus.route(SendEmail, "images")
    bus.route(Resize, "images")
    runs: list[str] = []

    def fail(message: Message) -> None:
        runs.append(type(message).__name__)
        raise ConnectionError("down")

    bus.add_handler(fail, SendEmail)
    bus.add_handler(fail, Resize)
    bus.dispatch(SendEmail(to="a"))
    bus.dispatch(Resize(width=1))
    run_worker(bus, ["images"])
    assert sorted(runs) == ["Resize"] * 3 + ["SendEmail"] * 2
    assert sorted(images.delays) == [0.25, 0.5, 1.0]
    assert jobs.delays == []


def test_a_retry_goes_back_to_the_queue_it_came_from(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus()
    jobs = add_memory(bus, "jobs")
    bus.route(Resize, "jobs", queue="images")
    attempts: list[int] = []

    def resize(message: Resize, envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        if envelope.attempt == 1:
            raise ConnectionError("down")

    bus.add_handler(resize, Resize)
    bus.dispatch(Resize(width=1))
    run_worker(bus, ["jobs"])
    assert attempts == [1, 2]
    assert [s.ready for s in jobs.stats(["jobs", "images"])] == [0, 0]


def test_a_delayed_retry_is_not_handed_out_early(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(delay=30, jitter=0))
    jobs = add_memory(bus, "jobs")
    bus.route(SendEmail, "jobs")
    runs: list[int] = []

    def send(message: SendEmail, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        raise ConnectionError("down")

    bus.add_handler(send, SendEmail)
    bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert runs == [1]
    [stats] = jobs.stats()
    assert (stats.ready, stats.delayed, stats.in_flight) == (0, 1, 0)


def test_the_check_refuses_retry_delays_a_transport_cannot_keep(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> None:
    bus = make_bus(retry=RetryStrategy(delay=1, max_delay=None))
    jobs = add_memory(bus, "jobs")
    # The longest wait is the third: 4 s, plus 10% jitter.
    jobs.capabilities = Capabilities(delay=True, max_delay=4.5)
    bus.check(["jobs"])
    jobs.capabilities = Capabilities(delay=True, max_delay=4.0)
    with pytest.raises(ConfigurationError, match=r"may wait 4\.4s"):
        bus.check(["jobs"])
    jobs.capabilities = Capabilities(delay=False)
    with pytest.raises(ConfigurationError, match="cannot delay messages"):
        bus.check(["jobs"])
