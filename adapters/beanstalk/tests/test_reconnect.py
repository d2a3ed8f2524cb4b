"""Connections cut under the transport (courier.testing.proxy), and a restarted server.

When a connection closes, beanstalkd gives its reserved jobs back to the
ready queue. The transport notices a dead connection on its next command
(ConnectionLost), opens a new one on the call after, and settles a
``Received`` of the old connection on the new one only where that is sound:
a delete of a handled job goes through if nobody took the job since (else
NOT_FOUND, logged at DEBUG); release, bury and touch, which only mean
something on the reserving connection, send nothing; and after a server
restart, old job ids name other jobs, so nothing at all is sent for them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.envelope import Envelope
from courier.errors import ConnectionLost, PublishNotConfirmed
from courier.testing.contract import ContractMessage
from courier.testing.proxy import TcpProxy
from courier.testing.services import in_ci
from courier.testing.waiting import wait_for
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.beanstalk


class Job(Message):
    message_name: ClassVar[str] = "courier.beanstalk-test.job"

    n: int


@pytest.fixture
def proxy(beanstalk_url: str) -> Iterator[TcpProxy]:
    dsn = Dsn.parse(beanstalk_url)
    with TcpProxy(dsn.host or "127.0.0.1", dsn.port or 11300) as running:
        yield running


def through(proxy: TcpProxy) -> str:
    return f"beanstalk://127.0.0.1:{proxy.port}"


def test_a_cut_between_handling_and_ack(
    janitor: Any, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    transport = janitor.transport(url=through(proxy))
    transport.send_many([Envelope(ContractMessage(n=1)), Envelope(ContractMessage(n=2))])
    handled, other = transport.receive(max=2, timeout=5)
    assert proxy.cut() == 1
    # beanstalkd gives the jobs back when it sees the connection close.
    for job in (handled, other):
        wait_for(lambda job=job: janitor.job(job.handle)["state"] == "ready", what="the jobs back")
    with caplog.at_level(logging.DEBUG, logger="courier.beanstalk"):
        # The delete finds the connection dead, and goes through on a new one:
        # the handled job, back in the ready queue, does not run twice.
        transport.ack(handled)
        assert transport.generation == handled.generation + 1
        assert janitor.job(handled.handle) is None
        # Verbs that mean something only on the reserving connection send nothing.
        transport.renew(other)
        transport.release(other)
        transport.reject(other, "stale")
    stats = janitor.job(other.handle)
    assert (stats["state"], stats["releases"], stats["buries"]) == ("ready", 0, 0)
    assert "TTR ran out" not in caplog.text
    [again] = transport.receive(timeout=5)
    assert again.handle == other.handle
    assert again.generation == transport.generation
    transport.ack(again)
    assert transport.receive(timeout=0.3) == []


def test_an_idle_connection_closed_meanwhile_is_replaced_before_use(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(url=through(proxy))
    transport.send(Envelope(ContractMessage(n=1)))
    proxy.cut()
    time.sleep(1.2)  # idle for longer than the check's second
    transport.send(Envelope(ContractMessage(n=2)))  # no ConnectionLost: reconnected first
    assert transport.generation == 2
    got = transport.receive(max=2, timeout=5)
    assert sorted(r.envelope.message.n for r in got) == [1, 2]
    transport.ack_many(got)


def test_a_stale_ack_of_a_job_another_worker_took_is_a_debug_line(
    janitor: Any, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    transport = janitor.transport(url=through(proxy))
    other = janitor.transport(transport.queue)
    transport.send(Envelope(ContractMessage(n=1)))
    [got] = transport.receive(timeout=5)
    proxy.cut()
    [taken] = other.receive(timeout=5)
    assert taken.handle == got.handle
    with caplog.at_level(logging.DEBUG, logger="courier.beanstalk"):
        transport.ack_many([got])
        transport.retry(got, got.envelope.with_(attempt=2, received=None), 0)
    assert "has been taken since" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [text for text in warnings if "reconnecting" not in text] == []
    assert janitor.job(taken.handle)["state"] == "reserved"
    other.ack(taken)
    [retried] = transport.receive(timeout=2)  # the retry was put all the same
    assert retried.envelope.attempt == 2
    transport.ack(retried)


def test_a_waiting_receive_raises_connection_lost_and_the_next_call_reconnects(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(url=through(proxy))
    assert transport.receive(timeout=0.1) == []
    threading.Timer(0.3, proxy.cut).start()
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        transport.receive(timeout=5)
    assert time.monotonic() - started < 3
    transport.send(Envelope(ContractMessage(n=2)))
    [got] = transport.receive(timeout=5)
    assert got.generation == 2
    transport.ack(got)


def test_a_silent_network_is_noticed_after_the_io_timeout(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=through(proxy), io_timeout="1")
    assert transport.receive(timeout=0.1) == []
    proxy.pause()
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="timed out"):
        transport.receive(timeout=10)
    assert time.monotonic() - started < 5
    proxy.resume()
    proxy.cut()
    transport.send(Envelope(ContractMessage(n=3)))
    [got] = transport.receive(timeout=5)
    transport.ack(got)


def test_a_worker_survives_cuts_mid_stream_and_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    queue = janitor.name()
    total = 300
    producer = Bus(transports={"work": janitor.dsn(queue)})
    producer.route(Job, "work")
    producer.dispatch_many([Job(n=n) for n in range(total)])
    consumer = Bus(transports={"work": janitor.dsn(queue, url=through(proxy))})
    consumer.route(Job, "work")
    ledger: list[int] = []

    @consumer.handler(Job)
    def handle(job: Job) -> None:
        ledger.append(job.n)
        time.sleep(0.002)

    options = WorkerOptions(prefetch=10, sleep=0.2, reconnect_delay=0.05, reconnect_max_delay=0.2)
    worker = Worker(consumer, ["work"], options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        for mark in (40, 120, 200):
            wait_for(lambda mark=mark: len(set(ledger)) >= mark, 20, f"{mark} jobs")
            assert proxy.cut() == 1
        wait_for(lambda: len(set(ledger)) == total, 30, "every job")
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert set(ledger) == set(range(total))
    duplicates = sum(count - 1 for count in Counter(ledger).values())
    # Only what was held (reserved, or handled with its delete not yet sent) comes twice.
    assert duplicates <= 3 * (10 + options.ack_batch)
    wait_for(lambda: janitor.counts(queue)["ready"] == 0, what="an empty tube")
    assert janitor.counts(queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    producer.close()
    consumer.close()


def test_publishing_through_cuts_names_what_failed(janitor: Any, proxy: TcpProxy) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=through(proxy))
    batch = [Envelope(ContractMessage(n=n)) for n in range(1000)]
    stop = threading.Event()

    def cutter() -> None:
        for _ in range(3):
            if stop.wait(0.05):
                return
            proxy.cut()

    thread = threading.Thread(target=cutter)
    thread.start()
    try:
        for start in range(0, len(batch), 100):
            pending = batch[start : start + 100]
            while pending:
                try:
                    transport.send_many(pending)
                    pending = []
                except PublishNotConfirmed as error:
                    failed = set(error.failed_ids)
                    assert failed
                    pending = [e for e in pending if e.id in failed]
    finally:
        stop.set()
        thread.join()
    consumer = janitor.transport(queue)
    seen: Counter[str] = Counter()
    while got := consumer.receive(max=100, timeout=1):
        seen.update(r.envelope.id for r in got)
        consumer.ack_many(got)
    assert set(seen) == {e.id for e in batch}
    # A put whose answer the cut swallowed may have gone in: at most one per cut.
    assert sum(seen.values()) - len(batch) <= proxy.cuts
    assert proxy.cuts >= 1


# -- a server of the test's own, to restart --------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A beanstalkd of this test's own on a free port, which it may restart."""

    def __init__(self, binlog: Path | None) -> None:
        self.port = free_port()
        self.binlog = binlog
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["beanstalkd", "-l", "127.0.0.1", "-p", str(self.port)]
        if self.binlog is not None:
            command += ["-b", str(self.binlog)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, 10, "beanstalkd to listen")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    @property
    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    if shutil.which("beanstalkd") is None:
        message = "the beanstalkd program is not installed"
        if in_ci():
            pytest.fail(f"{message}; CI needs it: .ci/run installs it", pytrace=False)
        pytest.skip(message)
    binlog = None
    if getattr(request, "param", False):
        binlog = tmp_path / "binlog"
        binlog.mkdir()
    running = Server(binlog)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_after_a_server_restart_old_job_ids_are_left_alone(
    janitor: Any, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    transport = janitor.transport("jobs", url=server.url)
    transport.send(Envelope(ContractMessage(n=1)))
    [old] = transport.receive(timeout=5)
    server.stop()
    server.start()  # no binlog: the job is gone, and ids start again at 1
    with caplog.at_level(logging.WARNING, logger="courier.beanstalk"):
        # Noticed by the idle check, or by the receive itself.
        with contextlib.suppress(ConnectionLost):
            transport.receive(timeout=0)
        fresh = transport.send(Envelope(ContractMessage(n=2)))
    assert "restarted" in caplog.text
    assert fresh.transport_message_id == str(old.handle)  # the same id, another job
    transport.ack(old)
    transport.retry(old, old.envelope.with_(attempt=2, received=None), 0)
    [got] = transport.receive(timeout=2)
    assert got.envelope.id == fresh.id
    transport.ack(got)
    [retried] = transport.receive(timeout=2)
    assert retried.envelope.id == old.envelope.id
    assert retried.envelope.attempt == 2
    transport.ack(retried)
    transport.close()


@pytest.mark.slow
@pytest.mark.parametrize("server", [True], indirect=True, ids=["binlog"])
def test_a_worker_survives_a_server_restart_and_loses_nothing(server: Server) -> None:
    total = 200
    dsn = f"{server.url}?queue=jobs&lease=2&io_timeout=2&connect_timeout=1"
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    producer.dispatch_many([Job(n=n) for n in range(total)])
    producer.close()
    consumer = Bus(transports={"work": dsn})
    consumer.route(Job, "work")
    ledger: list[int] = []

    @consumer.handler(Job)
    def handle(job: Job) -> None:
        ledger.append(job.n)
        time.sleep(0.005)

    options = WorkerOptions(prefetch=10, sleep=0.2, reconnect_delay=0.05, reconnect_max_delay=0.3)
    worker = Worker(consumer, ["work"], options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: len(set(ledger)) >= 60, 20, "60 jobs")
        server.stop()
        time.sleep(0.5)
        server.start()
        wait_for(lambda: len(set(ledger)) == total, 30, "every job")
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert set(ledger) == set(range(total))
    duplicates = sum(count - 1 for count in Counter(ledger).values())
    assert duplicates <= 10 + options.ack_batch
    consumer.close()
