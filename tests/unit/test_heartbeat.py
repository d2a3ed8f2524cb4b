"""The heartbeat: beats without a write per message, and the orders it obeys."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import Message
from courier.errors import TransportError
from courier.events import StopReason
from courier.heartbeat import Heartbeat
from courier.status import MemoryStatusStore, WorkerStatus
from courier.testing.waiting import wait_for
from courier.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus
    from courier.transports.memory import MemoryTransport


class Tick(Message):
    message_name: ClassVar[str] = "test.heartbeat.tick"

    n: int


class CountingStore(MemoryStatusStore):
    def __init__(self) -> None:
        super().__init__()
        self.beats: list[WorkerStatus] = []

    def beat(self, status: WorkerStatus) -> None:
        self.beats.append(status)
        super().beat(status)


class BrokenStore(MemoryStatusStore):
    def beat(self, status: WorkerStatus) -> None:
        raise TransportError("status store down")

    def paused(self) -> frozenset[str]:
        raise TransportError("status store down")


@pytest.fixture
def bus(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus(routing={Tick: "jobs"})
    add_memory(bus, "jobs")
    add_memory(bus, "mail")

    @bus.handler(Tick)
    def tick(message: Tick) -> None:
        if message.n < 0:
            raise ValueError("x" * 1000)

    return bus


def running(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_no_write_per_message_one_beat_at_start_and_one_at_stop(bus: Bus) -> None:
    store = CountingStore()
    for n in range(200):
        bus.dispatch(Tick(n=n))
    worker = Worker(bus, ["jobs"], options=WorkerOptions(stop_when_idle=True, sleep=0.01))
    Heartbeat(store, interval=60).attach(worker)
    worker.run()
    assert [beat.state for beat in store.beats] == ["idle", "stopped"]
    last = store.beats[-1]
    assert (last.handled, last.failed, last.worker_id) == (200, 0, worker.worker_id)
    assert last.last_progress_at >= last.started_at > 0
    assert last.queues == {"jobs": ["jobs"]}


def test_beats_every_interval_while_running(bus: Bus) -> None:
    store = CountingStore()
    worker = Worker(bus, ["jobs"], options=WorkerOptions(sleep=0.01))
    Heartbeat(store, interval=0.1, poll=0.02).attach(worker)
    thread = running(worker)
    wait_for(lambda: len(store.beats) >= 4)
    worker.stop()
    thread.join(5)
    assert store.beats[-1].state == "stopped"
    assert store.workers(time.time())[0].state == "stopped"


def test_a_stop_order_after_the_start_stops_the_worker(bus: Bus) -> None:
    store = MemoryStatusStore()
    store.request_stop(time.time() - 10)  # an old order: not for this worker
    worker = Worker(bus, ["jobs"], options=WorkerOptions(sleep=0.5))
    Heartbeat(store, interval=1, poll=0.02).attach(worker)
    thread = running(worker)
    time.sleep(0.2)
    assert thread.is_alive()
    store.request_stop(time.time())
    thread.join(2)
    assert not thread.is_alive()
    assert worker.stop_reason is StopReason.STOP_REQUESTED


def test_a_paused_transport_is_not_received_from_until_resumed(bus: Bus) -> None:
    store = MemoryStatusStore()
    store.pause("jobs")
    worker = Worker(bus, ["jobs", "mail"], options=WorkerOptions(sleep=0.02))
    Heartbeat(store, interval=0.05, poll=0.02).attach(worker)
    thread = running(worker)
    wait_for(lambda: worker.paused == {"jobs"})
    for n in range(5):
        bus.dispatch(Tick(n=n))
    time.sleep(0.3)
    assert worker.handled == 0
    store.pause("mail")
    wait_for(lambda: store.workers(time.time())[0].state == "paused")
    store.resume("jobs")
    store.resume("mail")
    wait_for(lambda: worker.handled == 5)
    worker.stop()
    thread.join(5)


def test_a_store_that_fails_is_logged_once_and_never_stops_the_worker(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(3):
        bus.dispatch(Tick(n=n))
    worker = Worker(bus, ["jobs"], options=WorkerOptions(sleep=0.01))
    Heartbeat(BrokenStore(), interval=0.02, poll=0.01).attach(worker)
    with caplog.at_level(logging.WARNING, logger="courier.heartbeat"):
        thread = running(worker)
        wait_for(lambda: worker.handled == 3)
        time.sleep(0.2)
        worker.stop()
        thread.join(5)
    warnings = [r for r in caplog.records if r.name == "courier.heartbeat"]
    assert len(warnings) == 1
    assert "status store down" in warnings[0].getMessage()
    assert worker.stop_reason is StopReason.REQUESTED


def test_the_last_error_is_one_short_line(bus: Bus) -> None:
    store = CountingStore()
    bus.dispatch(Tick(n=-1))
    worker = Worker(bus, ["jobs"], options=WorkerOptions(stop_when_idle=True, sleep=0.01))
    Heartbeat(store, interval=60).attach(worker)
    worker.run()
    error = store.beats[-1].last_error
    assert error is not None
    assert error.startswith("ValueError: xxx")
    assert len(error) <= 200
