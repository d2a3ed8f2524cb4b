"""Real worker processes on beanstalkd, with a ledger of every message handled.

Foreign bytes put by raw greenstalk, a worker SIGKILLed while it holds
jobs, a handler that outlives the TTR, a delayed message across a worker
restart, and a poison message that kills its worker every time.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.dead_letters import InvalidMessage
from courier.serializer import pack
from courier.testing.waiting import wait_for

pytestmark = pytest.mark.beanstalk


class Job(Message):
    message_name: ClassVar[str] = "courier.beanstalk-test.job"

    n: int


@pytest.fixture
def workers(janitor: Any, spawn: Any) -> Any:
    keeper = spawn(janitor.dsn(janitor.name()))
    keeper.message_types.append(Job)
    return keeper


def producer(dsn: str) -> Bus:
    bus = Bus(transports={"work": dsn})
    bus.route(Job, "work")
    return bus


def test_foreign_bytes_end_in_the_invalid_transport_and_the_worker_goes_on(
    janitor: Any, workers: Any
) -> None:
    bus = producer(workers.dsn)
    queue = bus.transport("work").queue
    job_type = {"courier-type": Job.message_name}
    bus.dispatch(Job(n=1))
    janitor.put_raw(queue, b'{"n": 1')
    janitor.put_raw(queue, pack(b'{"n": 2}', {"courier-type": "os.system", "courier-id": "u1"}))
    bus.dispatch(Job(n=2))
    janitor.put_raw(queue, pack(b'{"n": "two"}', {**job_type, "courier-id": "v1"}))
    janitor.put_raw(queue, b"\xff\xfe\xfd")
    janitor.put_raw(queue, b"")
    janitor.put_raw(queue, b"[" * 10_000)
    bus.dispatch(Job(n=3))
    workers.start()
    wait_for(lambda: len(workers.store_records("invalid")) == 6, 20, "six invalid records")
    wait_for(lambda: sorted(workers.jobs()) == [1, 2, 3], 10, "the good jobs")
    records = workers.store_records("invalid")
    reasons = {}
    for record in records:
        message = record.message
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        assert message.transport == "work"
        reasons[message.body] = message.reason
    assert "malformed JSON" in reasons[b'{"n": 1']
    assert "unknown message type 'os.system'" in reasons[b'{"n": 2}']
    assert reasons[b'{"n": "two"}'].startswith(f"invalid {Job.message_name}: n")
    assert "not UTF-8" in reasons[b"\xff\xfe\xfd"]
    assert reasons[b""] == "empty job"
    assert "malformed JSON" in reasons[b"[" * 10_000]
    ids = {record.id.split(".")[0] for record in records}  # the claimed id, then a digest
    assert {"u1", "v1"} <= ids
    assert workers.processes[0].poll() is None, workers.stderr()
    workers.stop_all()
    assert workers.processes[0].returncode == 0, workers.stderr()
    assert janitor.counts(queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    assert workers.store_records("failed") == []
    bus.close()


@pytest.mark.slow
def test_a_worker_killed_while_holding_jobs_loses_none(janitor: Any, workers: Any) -> None:
    total = 300
    bus = producer(workers.dsn)
    queue = bus.transport("work").queue
    bus.dispatch_many([Job(n=n) for n in range(total)])
    first = workers.start(sleep="0.005", prefetch="20")
    wait_for(lambda: len(workers.jobs()) >= 60 or first.poll() is not None, 30, "60 jobs")
    assert first.poll() is None, workers.stderr()
    held = janitor.counts(queue)["reserved"]
    assert held > 0, "the worker should hold reserved, unacknowledged jobs"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    # beanstalkd gives a closed connection's jobs back at once.
    wait_for(lambda: janitor.counts(queue)["reserved"] == 0, 5, "the jobs to come back")
    workers.start(prefetch="20")
    wait_for(lambda: set(workers.jobs()) == set(range(total)), 30, "every job")
    workers.stop_all()
    handled = Counter(workers.jobs())
    # Only what the killed worker held came twice: its reserved jobs and unsent deletes.
    assert sum(count - 1 for count in handled.values()) <= 20 + 50
    assert janitor.counts(queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    bus.close()


@pytest.mark.slow
def test_touch_keeps_jobs_held_past_their_ttr_from_another_worker(
    janitor: Any, workers: Any
) -> None:
    bus = producer(workers.dsn.replace("lease=2", "lease=1"))
    queue = bus.transport("work").queue
    bus.dispatch_many([Job(n=n) for n in range(3)])
    holder = workers.start(sleep="1.5")
    wait_for(lambda: len(workers.jobs()) >= 1, 15, "the first job to start")
    assert janitor.counts(queue)["reserved"] == 3  # one in hand, two prefetched
    rival = workers.start()
    wait_for(lambda: len(workers.jobs()) == 3, 15, "three jobs")
    time.sleep(1.7)  # the last handler ends, and a lapse would have shown by now
    lines = workers.lines("job")
    assert sorted(int(n) for n, _ in lines) == [0, 1, 2]
    assert {int(pid) for _, pid in lines} == {holder.pid}
    assert rival.poll() is None
    workers.stop_all()
    assert "TTR ran out" not in workers.stderr()
    bus.close()


@pytest.mark.slow
def test_a_delayed_message_survives_a_worker_restart(janitor: Any, workers: Any) -> None:
    bus = producer(workers.dsn)
    queue = bus.transport("work").queue
    started = time.monotonic()
    bus.dispatch(Job(n=42), delay=2)
    first = workers.start()
    time.sleep(0.8)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert workers.jobs() == []
    assert janitor.counts(queue)["delayed"] == 1
    workers.start()
    wait_for(lambda: workers.jobs() == [42], 10, "the delayed job")
    assert time.monotonic() - started >= 1.9
    time.sleep(0.5)
    assert workers.jobs() == [42]
    bus.close()


@pytest.mark.slow
def test_a_poison_message_is_dead_lettered_after_max_deliveries(janitor: Any, workers: Any) -> None:
    workers.dsn += "&delivery_count=true"
    bus = producer(workers.dsn)
    queue = bus.transport("work").queue
    bus.dispatch_many([Job(n=n) for n in range(30)])
    deaths = 0
    # A supervisor: restart the worker each time the poison kills it.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        process = workers.start(poison="13", max_deliveries="3")
        while process.poll() is None and time.monotonic() < deadline:
            if len(workers.store_records("failed")) == 1 and len(set(workers.jobs())) == 29:
                break
            time.sleep(0.05)
        if process.poll() is None:
            break
        assert process.returncode == 3, workers.stderr()
        deaths += 1
    workers.stop_all()
    assert deaths == 3, workers.stderr()
    [record] = workers.store_records("failed")
    assert record.message == Job(n=13)
    assert record.error.error_class == "courier.errors.DeliveryLimitExceeded"
    assert "its handler killed the worker 3 times" in record.error.message
    assert set(workers.jobs()) == set(range(30)) - {13}
    assert workers.store_records("invalid") == []
    assert janitor.counts(queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    bus.close()


def test_sigterm_finishes_the_job_in_hand_and_gives_the_prefetched_back(
    janitor: Any, workers: Any
) -> None:
    bus = producer(workers.dsn)
    queue = bus.transport("work").queue
    bus.dispatch_many([Job(n=n) for n in range(5)])
    worker = workers.start(sleep="1.0")
    wait_for(lambda: workers.jobs() == [0], 15, "the first job to start")
    assert janitor.counts(queue)["reserved"] == 5
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=10)
    assert worker.returncode == 0, workers.stderr()
    assert workers.jobs() == [0]
    # The one in hand was acknowledged; the four prefetched went back at once.
    assert janitor.counts(queue) == {"ready": 4, "reserved": 0, "delayed": 0, "buried": 0}
    client = janitor.client()
    client.use(queue)
    job = client.peek_ready()
    assert janitor.job(job.id)["releases"] == 1
    bus.close()
