"""The worker: limits, prefetch, batched acks, stopping, events, signals."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import ConfigurationError, ConnectionLost, Envelope, Message, StopWorker
from courier.errors import UnrecoverableError
from courier.events import (
    MessageFailed,
    MessageHandled,
    MessageReceived,
    MessageRetried,
    StopReason,
    TransportFailed,
    WorkerEvent,
    WorkerStarted,
    WorkerStopped,
)
from courier.middleware.retry import RetryStrategy
from courier.transports.base import QueueStats, Received
from courier.transports.memory import MemoryTransport
from courier.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from courier import Bus


class Job(Message):
    message_name: ClassVar[str] = "test.worker.job"

    n: int


class Spy(MemoryTransport):
    """Records what the worker asks of the broker."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.receive_max: list[int] = []
        self.ack_batches: list[int] = []
        self.single_acks = 0
        self.renewed: list[str] = []
        self.fail_receives = 0
        self.keepalive: float | None = None
        #: The timeout of every receive, in order.
        self.timeouts: list[float] = []

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        if self.fail_receives:
            self.fail_receives -= 1
            raise ConnectionLost("broker restarting")
        got = super().receive(queues, max=max, timeout=timeout)
        self.timeouts.append(timeout)
        if got:
            self.receive_max.append(max)
        return got

    def ack_many(self, received: Sequence[Received]) -> None:
        self.ack_batches.append(len(received))
        super().ack_many(received)

    def ack(self, received: Received) -> None:
        self.single_acks += 1
        super().ack(received)

    def renew(self, received: Received) -> None:
        assert received.envelope is not None
        self.renewed.append(received.envelope.id)

    def keepalive_interval(self) -> float | None:
        return self.keepalive


@pytest.fixture
def bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus()
    add_memory(bus, "jobs", cls=Spy)
    bus.route(Job, "jobs")
    return bus


def spy(bus: Bus) -> Spy:
    transport = bus.transport("jobs")
    assert isinstance(transport, Spy)
    return transport


def handle_all(bus: Bus) -> list[int]:
    handled: list[int] = []
    bus.add_handler(lambda job: handled.append(job.n), Job)
    return handled


def dispatch(bus: Bus, count: int) -> None:
    for n in range(count):
        bus.dispatch(Job(n=n))


def test_options_are_checked() -> None:
    for bad in (
        {"limit": 0},
        {"failure_limit": 0},
        {"time_limit": 0},
        {"memory_limit": -1},
        {"prefetch": 0},
        {"ack_batch": 0},
        {"sleep": -1},
        {"keepalive": 0},
    ):
        with pytest.raises(ConfigurationError):
            WorkerOptions(**bad)  # type: ignore[arg-type]


def test_a_worker_needs_a_transport(bus: Bus) -> None:
    with pytest.raises(ConfigurationError, match="at least one transport"):
        Worker(bus, [])


def test_run_returns_why_it_stopped(bus: Bus, make_worker: Callable[..., Worker]) -> None:
    handled = handle_all(bus)
    dispatch(bus, 3)
    worker = make_worker(bus, ["jobs"])
    assert worker.run() is StopReason.EMPTY
    assert handled == [0, 1, 2]
    assert (worker.handled, worker.failed) == (3, 0)


def test_limit_stops_after_that_many_and_prefetches_no_more(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 5)
    worker = run_worker(bus, ["jobs"], limit=3, prefetch=10)
    assert worker.stop_reason is StopReason.LIMIT
    assert handled == [0, 1, 2]
    assert spy(bus).receive_max == [3]
    # The two left were never taken: nothing to release, nothing counted as a delivery.
    assert spy(bus).stats() == [QueueStats("jobs", ready=2, in_flight=0, delayed=0, dead=0)]


def test_prefetch_shrinks_to_what_the_limit_has_left(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handle_all(bus)
    dispatch(bus, 10)
    run_worker(bus, ["jobs"], limit=5, prefetch=2)
    assert spy(bus).receive_max == [2, 2, 1]


def test_failure_limit(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    runs: list[int] = []

    def job(message: Job) -> None:
        runs.append(message.n)
        if message.n % 2:
            raise UnrecoverableError("odd")

    bus.add_handler(job, Job)
    dispatch(bus, 10)
    worker = run_worker(bus, ["jobs"], failure_limit=2, prefetch=1)
    assert worker.stop_reason is StopReason.FAILURE_LIMIT
    assert runs == [0, 1, 2, 3]
    assert (worker.handled, worker.failed) == (2, 2)


def test_time_limit(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    handle_all(bus)
    started = time.monotonic()
    worker = run_worker(bus, ["jobs"], stop_when_idle=False, time_limit=0.05)
    elapsed = time.monotonic() - started
    assert worker.stop_reason is StopReason.TIME_LIMIT
    assert 0.05 <= elapsed < 0.3


def test_memory_limit_stops_when_resident_memory_exceeds_it(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handle_all(bus)
    dispatch(bus, 3)
    # Any running Python process holds more than 1 MiB resident.
    worker = run_worker(bus, ["jobs"], stop_when_idle=False, memory_limit=1)
    assert worker.stop_reason is StopReason.MEMORY_LIMIT


def test_memory_limit_above_the_process_size_lets_it_run(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 3)
    worker = run_worker(bus, ["jobs"], memory_limit=1024 * 1024)
    assert worker.stop_reason is StopReason.EMPTY
    assert handled == [0, 1, 2]


def test_transports_learn_the_worker_id_before_receiving(bus: Bus) -> None:
    handle_all(bus)
    seen: list[tuple[str, str]] = []
    transport = bus.transport("jobs")
    transport.identify = lambda worker_id: seen.append((worker_id, "identify"))  # type: ignore[method-assign]
    Worker(bus, ["jobs"], worker_id="mailer-7")
    assert seen == [("mailer-7", "identify")]


def test_acks_are_batched_with_ack_many(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    handle_all(bus)
    dispatch(bus, 5)
    run_worker(bus, ["jobs"], ack_batch=50, ack_interval=60)
    assert spy(bus).ack_batches == [5]
    assert spy(bus).single_acks == 0
    assert len(spy(bus).acked) == 5


def test_a_full_batch_is_flushed_at_once(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    handle_all(bus)
    dispatch(bus, 5)
    run_worker(bus, ["jobs"], ack_batch=2, ack_interval=60)
    assert spy(bus).ack_batches == [2, 2, 1]


def test_pending_acks_are_flushed_before_stopping(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    acked_when_handled: list[int] = []

    def job(message: Job) -> None:
        acked_when_handled.append(len(spy(bus).acked))

    bus.add_handler(job, Job)
    dispatch(bus, 3)
    worker = run_worker(bus, ["jobs"], limit=3, ack_batch=50, ack_interval=60)
    assert worker.stop_reason is StopReason.LIMIT
    assert acked_when_handled == [0, 0, 0]  # nothing acknowledged while handling
    assert spy(bus).ack_batches == [3]
    assert spy(bus).stats()[0].in_flight == 0


def test_stop_from_another_thread(bus: Bus, make_worker: Callable[..., Worker]) -> None:
    handle_all(bus)
    worker = make_worker(bus, ["jobs"], stop_when_idle=False, sleep=0.05)
    timer = threading.Timer(0.05, worker.stop)
    started = time.monotonic()
    timer.start()
    try:
        reason = worker.run()
    finally:
        timer.cancel()
    assert reason is StopReason.REQUESTED
    assert time.monotonic() - started < 1.0


def test_stop_finishes_the_message_in_hand_and_releases_the_prefetched(
    bus: Bus, make_worker: Callable[..., Worker]
) -> None:
    workers: list[Worker] = []
    handled: list[tuple[int, int]] = []

    def job(message: Job, envelope: Envelope) -> None:
        assert envelope.received is not None
        handled.append((message.n, envelope.received.delivery_count))
        if len(workers) == 1:
            workers[0].stop()

    bus.add_handler(job, Job)
    dispatch(bus, 4)
    workers.append(make_worker(bus, ["jobs"], prefetch=10))
    assert workers[0].run() is StopReason.REQUESTED
    assert handled == [(0, 1)]
    assert spy(bus).stats() == [QueueStats("jobs", ready=3, in_flight=0, delayed=0, dead=0)]
    assert [e.message for e in spy(bus).acked] == [Job(n=0)]
    # Released at once, not lost: the next worker gets them, as second deliveries.
    workers.append(make_worker(bus, ["jobs"]))
    assert workers[1].run() is StopReason.EMPTY
    assert handled == [(0, 1), (1, 2), (2, 2), (3, 2)]


def test_stop_worker_raised_by_a_handler_stops_the_worker(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled: list[int] = []

    def job(message: Job) -> None:
        handled.append(message.n)
        if message.n == 1:
            raise StopWorker("deploy in progress")

    bus.add_handler(job, Job)
    dispatch(bus, 5)
    worker = run_worker(bus, ["jobs"], prefetch=10)
    assert worker.stop_reason is StopReason.REQUESTED
    assert handled == [0, 1]
    stats = spy(bus).stats()[0]
    assert stats.in_flight == 0
    assert stats.ready == 4  # the three prefetched, released; and the retried one


def test_sigterm_stops_after_the_message_in_hand(
    bus: Bus, make_worker: Callable[..., Worker]
) -> None:
    handled: list[int] = []

    def job(message: Job) -> None:
        handled.append(message.n)
        if message.n == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the worker installs signal handlers only in the main thread")
    bus.add_handler(job, Job)
    dispatch(bus, 3)
    before = signal.getsignal(signal.SIGTERM)
    worker = make_worker(bus, ["jobs"], prefetch=1)
    assert worker.run() is StopReason.SIGNAL
    assert handled == [0]
    assert len(spy(bus).acked) == 1
    assert signal.getsignal(signal.SIGTERM) == before


def test_lifecycle_events_reach_listeners(bus: Bus, run_worker: Callable[..., Worker]) -> None:
    def job(message: Job, envelope: Envelope) -> None:
        if message.n == 1 and envelope.attempt == 1:
            raise ConnectionError("flaky")

    bus.add_handler(job, Job)
    dispatch(bus, 2)
    events: list[WorkerEvent] = []
    worker = run_worker(bus, ["jobs"], listeners=[events.append], prefetch=1, worker_id="w-1")
    kinds = [type(event) for event in events]
    assert kinds == [
        WorkerStarted,
        MessageReceived, MessageHandled,
        MessageReceived, MessageFailed, MessageRetried,
        MessageReceived, MessageHandled,
        WorkerStopped,
    ]  # fmt: skip
    started, stopped = events[0], events[-1]
    assert isinstance(started, WorkerStarted)
    assert (started.transports, started.queues) == (("jobs",), ("jobs",))
    assert isinstance(stopped, WorkerStopped)
    # Each counter means one thing: two handled, none failed for good, one retried.
    assert (stopped.reason, stopped.handled, stopped.failed, stopped.retried) == (
        StopReason.EMPTY,
        2,
        0,
        1,
    )
    [failed] = [e for e in events if isinstance(e, MessageFailed)]
    assert failed.will_retry
    assert "flaky" in str(failed.error)
    handled = [e for e in events if isinstance(e, MessageHandled)]
    assert all(e.seconds >= 0 for e in handled)
    assert {(e.worker_id, e.instance_id) for e in events} == {("w-1", worker.instance_id)}


def test_a_final_failure_is_reported_without_retry(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    def job(message: Job) -> None:
        raise UnrecoverableError("no")

    bus.add_handler(job, Job)
    dispatch(bus, 1)
    events: list[WorkerEvent] = []
    run_worker(bus, ["jobs"], listeners=[events.append])
    [failed] = [e for e in events if isinstance(e, MessageFailed)]
    assert not failed.will_retry
    assert not [e for e in events if isinstance(e, MessageRetried)]


def test_a_listener_that_raises_does_not_stop_the_worker(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 3)
    seen: list[WorkerEvent] = []

    def broken(event: WorkerEvent) -> None:
        raise RuntimeError("listener bug")

    worker = run_worker(bus, ["jobs"], listeners=[broken, seen.append])
    assert handled == [0, 1, 2]
    assert worker.stop_reason is StopReason.EMPTY
    assert isinstance(seen[-1], WorkerStopped)  # later listeners still hear everything


def test_a_listener_raising_stop_worker_stops_it(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 5)

    def stop_after_two(event: WorkerEvent) -> None:
        if isinstance(event, MessageHandled) and len(handled) == 2:
            raise StopWorker("enough")

    worker = run_worker(bus, ["jobs"], listeners=[stop_after_two])
    assert handled == [0, 1]
    assert worker.stop_reason is StopReason.REQUESTED


def test_a_broker_error_on_receive_is_waited_out(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 2)
    spy(bus).fail_receives = 2
    events: list[WorkerEvent] = []
    run_worker(bus, ["jobs"], listeners=[events.append])
    assert handled == [0, 1]
    failures = [e for e in events if isinstance(e, TransportFailed)]
    assert [f.attempt for f in failures] == [1, 2]
    assert all(f.transport == "jobs" and f.retry_in < 0.01 for f in failures)


def test_a_transport_that_is_down_does_not_stop_the_others(
    bus: Bus, add_memory: Callable[..., MemoryTransport], run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    down = add_memory(bus, "down", cls=Spy)
    assert isinstance(down, Spy)
    down.fail_receives = 10**6
    dispatch(bus, 3)
    events: list[WorkerEvent] = []
    worker = run_worker(bus, ["down", "jobs"], listeners=[events.append], limit=3)
    assert handled == [0, 1, 2]
    assert worker.stop_reason is StopReason.LIMIT
    failures = [e for e in events if isinstance(e, TransportFailed)]
    assert failures
    assert {f.transport for f in failures} == {"down"}
    # The backoff grows for the failing transport, whatever the others do.
    assert [f.attempt for f in failures] == list(range(1, len(failures) + 1))


def test_stop_when_empty_is_not_concluded_from_a_transport_that_is_down(
    bus: Bus, add_memory: Callable[..., MemoryTransport], make_worker: Callable[..., Worker]
) -> None:
    handle_all(bus)
    down = add_memory(bus, "down", cls=Spy)
    assert isinstance(down, Spy)
    down.fail_receives = 3
    dispatch(bus, 1)
    worker = make_worker(bus, ["down", "jobs"])
    assert worker.run() is StopReason.EMPTY
    assert down.fail_receives == 0, "it waited for the broken transport to answer"


def test_the_time_limit_stops_in_the_middle_of_a_batch(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled: list[int] = []

    def slow(job: Job) -> None:
        handled.append(job.n)
        time.sleep(0.03)

    bus.add_handler(slow, Job)
    dispatch(bus, 10)
    worker = run_worker(bus, ["jobs"], prefetch=10, stop_when_idle=False, time_limit=0.1)
    assert worker.stop_reason is StopReason.TIME_LIMIT
    assert 2 <= len(handled) <= 5
    # What was prefetched and not started went back at once.
    [stats] = spy(bus).stats()
    assert (stats.ready, stats.in_flight) == (10 - len(handled), 0)


def test_the_first_transport_listed_is_drained_first(
    bus: Bus, add_memory: Callable[..., MemoryTransport], run_worker: Callable[..., Worker]
) -> None:
    class Urgent(Message):
        message_name: ClassVar[str] = "test.worker.urgent"

        n: int

    add_memory(bus, "urgent")
    bus.route(Urgent, "urgent")
    order: list[str] = []
    bus.add_handler(lambda job: order.append(f"job{job.n}"), Job)
    bus.add_handler(lambda urgent: order.append(f"urgent{urgent.n}"), Urgent)
    dispatch(bus, 2)
    for n in range(2):
        bus.dispatch(Urgent(n=n))
    run_worker(bus, ["urgent", "jobs"], prefetch=1)
    assert order == ["urgent0", "urgent1", "job0", "job1"]


def test_held_messages_are_renewed_while_a_handler_runs(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    spy(bus).keepalive = 0.01

    def slow(message: Job) -> None:
        time.sleep(0.1)

    bus.add_handler(slow, Job)
    bus.dispatch(Job(n=1), id="slow-1")
    run_worker(bus, ["jobs"])
    assert spy(bus).renewed
    assert set(spy(bus).renewed) == {"slow-1"}


def test_stop_when_empty_waits_for_delayed_retries(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
) -> None:
    bus = make_bus(retry=RetryStrategy(max_retries=2, delay=0.2, jitter=0))
    jobs = add_memory(bus, "jobs")
    bus.route(Job, "jobs")
    runs: list[int] = []

    def flaky(message: Job, envelope: Envelope) -> None:
        runs.append(envelope.attempt)
        if envelope.attempt < 3:
            raise ConnectionError("down")

    bus.add_handler(flaky, Job)
    dispatch(bus, 1)
    # --stop-when-idle stops with the retry still delayed...
    idle = run_worker(bus, ["jobs"])
    assert (runs, jobs.stats()[0].delayed) == ([1], 1)
    assert (idle.handled, idle.failed, idle.retried) == (0, 0, 1)
    # ...--stop-when-empty waits for it, and for the one after.
    worker = run_worker(bus, ["jobs"], stop_when_idle=False, stop_when_empty=True)
    assert worker.stop_reason is StopReason.EMPTY
    assert runs == [1, 2, 3]
    assert (worker.handled, worker.failed, worker.retried) == (1, 0, 1)
    assert jobs.stats()[0] == QueueStats("jobs", 0, 0, 0, 0)


def test_stop_when_empty_ends_at_once_when_nothing_can_come(
    bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    handled = handle_all(bus)
    dispatch(bus, 3)
    worker = run_worker(bus, ["jobs"], stop_when_idle=False, stop_when_empty=True, sleep=30)
    assert (handled, worker.stop_reason) == ([0, 1, 2], StopReason.EMPTY)
    # Nothing ready, in flight or delayed: no receive waited for more.
    assert spy(bus).timeouts
    assert set(spy(bus).timeouts) == {0.0}
    assert spy(bus).stats()[0] == QueueStats("jobs", 0, 0, 0, 0)


class UnconfirmedOutbox(MemoryTransport):
    """A transport that confirms in the background, and whose confirms failed."""

    def flush(self) -> None:
        from courier.errors import PublishNotConfirmed

        raise PublishNotConfirmed("1 earlier message(s) were not confirmed: nacked", ["x"])


def test_what_handlers_dispatched_is_flushed_before_their_acks_and_a_failure_gives_back(
    bus: Bus, run_worker: Callable[..., Worker], add_memory: Callable[..., MemoryTransport]
) -> None:
    """An unconfirmed dispatch from a handler: its message is redelivered, never acked."""
    add_memory(bus, "outbox", cls=UnconfirmedOutbox)
    handled = handle_all(bus)
    dispatch(bus, 3)
    run_worker(bus, ["jobs"], limit=3, ack_batch=50, ack_interval=60)
    assert sorted(handled) == [0, 1, 2]
    assert list(spy(bus).acked) == []
    stats = spy(bus).stats()[0]
    assert (stats.ready, stats.in_flight) == (3, 0)  # given back, to come again
