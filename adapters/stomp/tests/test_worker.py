"""courier's Worker on RabbitMQ's STOMP plugin, in real subprocesses with a ledger.

Foreign bytes put on the queue by a raw stomp.py producer end in the
invalid-message store with their reason while the worker goes on; a worker
SIGKILLed while holding messages loses none of them; a message whose
handler kills its worker every time ends in the failure store after
``max_deliveries`` deaths (counted in the status store, so on classic
queues too) while healthy messages flow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.dead_letters import InvalidMessage
from courier.testing.waiting import wait_for
from courier.transports.sqlite import SqliteTransport
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.stomp

SCRIPT = Path(__file__).with_name("kill_worker.py")


class Job(Message):
    message_name: ClassVar[str] = "courier.stomp-test.job"

    n: int


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[int]:
        return [int(line) for line in self.path.read_text().split()]


def start_worker(
    dsn: str, ledger: Ledger, store: Path, errors: Any, **env: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(ledger.path), str(store)],
        env={**os.environ, "COURIER_TEST_WORKER_DSN": dsn, **env},
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


def stored(store: Path, queue: str) -> list[Any]:
    if not store.exists():
        return []
    transport = SqliteTransport(store, name=queue, queue=queue, serializer=_serializer())
    try:
        return transport.list()
    finally:
        transport.close()


def _serializer() -> Any:
    bus = Bus()
    bus.registry.register(Job)
    return bus.store_serializer  # the stores hold courier's own record types


def test_foreign_bytes_end_in_the_invalid_store_and_the_worker_goes_on(
    janitor: Any, tmp_path: Path
) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue)
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    job = {"courier-type": Job.message_name}
    destination = f"/queue/{queue}"
    raw = janitor.raw
    producer.dispatch(Job(n=1))
    raw.send(destination, b'{"n": 1', {**job, "courier-id": "malformed"})
    raw.send(destination, b'{"n": 2}', {"courier-type": "os.system", "courier-id": "unknown"})
    producer.dispatch(Job(n=2))
    raw.send(destination, b'{"n": "two"}', {**job, "courier-id": "invalid"})
    raw.send(destination, b'{"n": 3, "x": "\xff\xfe"}', {**job, "courier-id": "not-utf8"})
    raw.send(destination, b"hello from PHP", {})
    raw.send(destination, b'{"n": 4}', {**job, "courier-id": "packed", "courier-headers": "{"})
    producer.dispatch(Job(n=3))

    ledger = Ledger(tmp_path / "ledger")
    store = tmp_path / "store.db"
    with (tmp_path / "stderr").open("w") as errors:
        worker = start_worker(dsn, ledger, store, errors, COURIER_TEST_WORKER_LIMIT="9")
        try:
            assert worker.wait(timeout=40) == 0, (tmp_path / "stderr").read_text()
        finally:
            worker.kill()
    assert ledger.lines() == [1, 2, 3]
    kept = stored(store, "invalid")
    reasons = {}
    for envelope in kept:
        message = envelope.message
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        assert message.transport == "work"
        assert not {"ack", "subscription", "destination", "receipt"} & set(message.headers)
        reasons[message.headers.get("courier-id", "no-headers")] = (message.reason, message.body)
    assert set(reasons) == {"malformed", "unknown", "invalid", "not-utf8", "no-headers", "packed"}
    assert "malformed JSON" in reasons["malformed"][0]
    assert reasons["malformed"][1] == b'{"n": 1'
    assert "unknown message type 'os.system'" in reasons["unknown"][0]
    assert reasons["invalid"][0].startswith(f"invalid {Job.message_name}: n")
    assert reasons["not-utf8"][1] == b'{"n": 3, "x": "\xff\xfe"}'
    assert "no courier-type header" in reasons["no-headers"][0]
    assert reasons["no-headers"][1] == b"hello from PHP"
    assert "courier-headers" in reasons["packed"][0]
    assert stored(store, "failed") == []
    assert janitor.count(queue) == 0


@pytest.mark.slow
def test_a_worker_killed_while_holding_messages_loses_none(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    total = 300
    dsn = janitor.dsn(queue, prefetch="50")
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(total)])

    ledger = Ledger(tmp_path / "ledger")
    errors_path = tmp_path / "stderr"
    with errors_path.open("w") as errors:
        process = start_worker(dsn, ledger, tmp_path / "store.db", errors)
        try:
            wait_for(lambda: len(ledger.lines()) >= 60 or process.poll() is not None, timeout=30)
            assert process.poll() is None, errors_path.read_text()
            held = total - janitor.count(queue) - len(ledger.lines())
            assert held > 0, "the worker should hold prefetched, unacknowledged messages"
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    consumer = Bus(transports={"work": dsn, "failed": "memory://"}, failure_transport="failed")
    consumer.route(Job, "work")
    janitor.transports.append(consumer.transport("work"))
    with ledger.path.open("a", buffering=1) as record:

        @consumer.handler(Job)
        def handle(job: Job) -> None:
            record.write(f"{job.n}\n")

        worker = Worker(consumer, ["work"], options=WorkerOptions(prefetch=50, sleep=0.2))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_for(lambda: set(ledger.lines()) == set(range(total)), timeout=30)
        finally:
            worker.stop()
            thread.join(timeout=10)
    consumer.close()
    handled = Counter(ledger.lines())
    assert set(handled) == set(range(total))
    # Only what the killed worker held came twice: its prefetch and unflushed acks.
    assert sum(count - 1 for count in handled.values()) <= 50 + 50
    assert janitor.count(queue) == 0


def test_sigterm_finishes_the_message_in_hand_and_gives_back_the_rest(
    janitor: Any, tmp_path: Path
) -> None:
    queue = janitor.name()
    total = 100
    dsn = janitor.dsn(queue, prefetch="20")
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(total)])

    ledger = Ledger(tmp_path / "ledger")
    errors_path = tmp_path / "stderr"
    with errors_path.open("w") as errors:
        process = start_worker(
            dsn, ledger, tmp_path / "store.db", errors, COURIER_TEST_HANDLER_SECONDS="0.05"
        )
        try:
            wait_for(lambda: len(ledger.lines()) >= 10 or process.poll() is not None, timeout=30)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, errors_path.read_text()
        finally:
            process.kill()
    handled = ledger.lines()
    assert len(handled) == len(set(handled)) < total
    # Everything else is back on the queue at once: acknowledged exactly once.
    wait_for(lambda: janitor.count(queue) == total - len(handled), timeout=3)


@pytest.mark.slow
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_poison_message_reaches_the_failure_store_while_the_rest_flows(
    janitor: Any, tmp_path: Path, queue_type: str
) -> None:
    """Deaths are counted in the status store, so classic queues (no delivery count) too."""
    queue = janitor.name()
    dsn = janitor.dsn(queue, queue_type=queue_type, prefetch="1")
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(20)])
    producer.dispatch(Job(n=-1))  # the killer
    producer.dispatch_many([Job(n=n) for n in range(20, 40)])

    ledger = Ledger(tmp_path / "ledger")
    store = tmp_path / "store.db"
    deaths = 0
    deadline = time.monotonic() + 60
    with (tmp_path / "stderr").open("w") as errors:
        # A supervisor: restart the worker whenever it dies, until all is done.
        while time.monotonic() < deadline:
            process = start_worker(dsn, ledger, store, errors, COURIER_TEST_MAX_DELIVERIES="3")
            try:
                while process.poll() is None and time.monotonic() < deadline:
                    if set(ledger.lines()) == set(range(40)) and stored(store, "failed"):
                        process.send_signal(signal.SIGTERM)
                        process.wait(timeout=10)
                        break
                    time.sleep(0.05)
            finally:
                process.kill()
                process.wait(timeout=10)
            if process.returncode == 3:
                deaths += 1
            else:
                break
    assert set(ledger.lines()) == set(range(40))
    [poison] = stored(store, "failed")
    assert poison.message == Job(n=-1)
    assert poison.error is not None
    assert poison.error.error_class == "courier.errors.DeliveryLimitExceeded"
    assert deaths == 3  # delivered three times (max_deliveries), stored on the fourth
    assert janitor.count(queue) == 0
