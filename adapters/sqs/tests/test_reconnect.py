"""Connections cut under the transport, through courier.testing.proxy.

SQS is HTTP: moto's server closes every connection after its answer, so a
cut hits whatever request is in flight (a long poll, a batch of sends).
botocore retries a cut request (``max_attempts``); what still fails is
``ConnectionLost``, or ``PublishNotConfirmed`` naming exactly what was not
sent. Receipt handles belong to the queue, not the connection
(``Unacked.KEPT``): an acknowledgement after a cut goes through. A long
poll cut while it waited may still take a message on the server's side:
that message comes back after its lease, never lost.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.envelope import Envelope
from courier.errors import ConnectionLost, PublishNotConfirmed
from courier.testing.contract import ContractMessage
from courier.testing.proxy import TcpProxy
from courier.testing.waiting import wait_for
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.sqs


class Job(Message):
    message_name: ClassVar[str] = "courier.sqs-test.job"

    n: int


class Proxy(TcpProxy):
    """TcpProxy that accepts connections while paused.

    HTTP clients open a connection per request here (moto closes each after
    its answer), so connections arrive while the proxy is paused; the core's
    proxy registers them with no events, which the selector refuses, and its
    thread dies. Registered as if running, then paused like the others.
    """

    def _accept(self) -> None:
        paused, self._paused = self._paused, False
        try:
            super()._accept()
        finally:
            self._paused = paused
            if paused:
                for side in list(self._sides):
                    self._update(side)


@pytest.fixture
def proxy(sqs_endpoint: str) -> Any:
    host, port = sqs_endpoint.split("://", 1)[1].rsplit(":", 1)
    with Proxy(host, int(port)) as running:
        yield running


def proxied(url: str, proxy: TcpProxy) -> str:
    address = url.split("@", 1)[1].split("?", 1)[0].split("/", 1)[0]
    return url.replace(f"@{address}", f"@127.0.0.1:{proxy.port}", 1)


def test_a_cut_long_poll_is_retried_and_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy), wait_time="3")
    transport.setup()
    threading.Timer(0.5, proxy.cut).start()
    started = time.monotonic()
    with contextlib.suppress(ConnectionLost):  # or botocore asked again, and it waited
        assert transport.receive(max=1, timeout=3) == []
    assert time.monotonic() - started < 10
    assert proxy.cuts >= 1
    sent = transport.send(Envelope(ContractMessage(n=1)))
    # The cut poll may still be waiting on the server and take it: then it
    # comes back after the lease (1 s).
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = transport.receive(max=1, timeout=1)
    assert [r.envelope.id for r in got] == [sent.id]
    transport.ack_many(got)


def test_an_ack_after_a_cut_goes_through(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy), lease="5")
    transport.setup()
    transport.send(Envelope(ContractMessage(n=1)))
    [got] = transport.receive(max=1, timeout=2)
    generation = transport.generation
    proxy.pause()
    before = proxy.accepted
    thread = threading.Thread(target=transport.ack, args=(got,))
    thread.start()
    wait_for(lambda: proxy.accepted > before)  # the delete is on its way, and held
    proxy.cut()
    proxy.resume()
    thread.join(timeout=10)  # cut in flight, retried on a new connection
    assert not thread.is_alive()
    assert proxy.cuts >= 1
    assert got.generation == generation
    assert janitor.count(transport.queue) == 0


def test_a_publish_cut_before_its_answer_names_every_unsent_id(
    janitor: Any, proxy: TcpProxy
) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=proxied(janitor.url, proxy), max_attempts="1")
    transport.setup()
    batch = [Envelope(ContractMessage(n=n)) for n in range(25)]
    proxy.pause()  # the requests leave the client but never reach the server
    errors: list[BaseException] = []

    def send() -> None:
        try:
            transport.send_many(batch)
        except BaseException as error:
            errors.append(error)

    before = proxy.accepted
    thread = threading.Thread(target=send)
    thread.start()
    # Three batches of at most ten, sent at once: all on their way, and held.
    wait_for(lambda: proxy.accepted >= before + 3)
    proxy.cut()
    thread.join(timeout=10)
    [error] = errors
    assert isinstance(error, PublishNotConfirmed)
    assert set(error.failed_ids) == {e.id for e in batch}
    proxy.resume()
    transport.send_many(batch)
    consumer = janitor.transport(queue, lease="10")
    got: list[Any] = []
    while len(got) < 25 and (more := consumer.receive(max=10, timeout=1)):
        got += more
    consumer.ack_many(got)
    assert sorted(r.envelope.message.n for r in got) == list(range(25))


def test_publishing_through_cuts_confirms_or_names_what_failed(
    janitor: Any, proxy: TcpProxy
) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=proxied(janitor.url, proxy), max_attempts="2")
    transport.setup()
    batch = [Envelope(ContractMessage(n=n)) for n in range(100)]
    stop = threading.Event()

    def cutter() -> None:
        # Three times: hold the next request that comes, then cut it mid-flight.
        for _ in range(3):
            if stop.wait(0.05):
                return
            proxy.pause()
            before, deadline = proxy.accepted, time.monotonic() + 2
            while proxy.accepted == before and time.monotonic() < deadline:
                time.sleep(0.005)
            proxy.cut()
            proxy.resume()

    thread = threading.Thread(target=cutter)
    thread.start()
    try:
        for start in range(0, len(batch), 25):
            pending = batch[start : start + 25]
            while pending:
                try:
                    transport.send_many(pending)
                    pending = []
                except (PublishNotConfirmed, ConnectionLost) as error:
                    failed = set(getattr(error, "failed_ids", ()) or [e.id for e in pending])
                    pending = [e for e in pending if e.id in failed]
    finally:
        stop.set()
        thread.join()
    consumer = janitor.transport(queue, lease="20")
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    while len(seen) < len(batch) and time.monotonic() < deadline:
        got = consumer.receive(max=10, timeout=1)
        seen.update(r.envelope.id for r in got if r.envelope)
        consumer.ack_many(got)
    assert set(seen) == {e.id for e in batch}  # a cut after SQS stored it may duplicate
    assert proxy.cuts >= 1


def test_a_worker_survives_cuts_mid_stream_and_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    queue = janitor.name()
    total = 120
    producer = Bus(transports={"work": janitor.dsn(queue)})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(total)])

    consumer = Bus(transports={"work": proxied(janitor.dsn(queue, lease="2"), proxy)})
    consumer.route(Job, "work")
    janitor.transports.append(consumer.transport("work"))
    ledger: list[int] = []

    def handle(job: Job) -> None:
        ledger.append(job.n)
        time.sleep(0.002)

    consumer.add_handler(handle, Job)
    options = WorkerOptions(prefetch=10, sleep=0.2, reconnect_delay=0.05, reconnect_max_delay=0.2)
    worker = Worker(consumer, ["work"], options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        for mark in (20, 50, 80):
            wait_for(lambda mark=mark: len(set(ledger)) >= mark, timeout=20)
            proxy.cut()
        wait_for(lambda: len(set(ledger)) == total, timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert set(ledger) == set(range(total))
    duplicates = sum(count - 1 for count in Counter(ledger).values())
    assert duplicates <= 3 * 20  # at most what was held at each cut
    wait_for(lambda: janitor.count(queue) == 0, timeout=5)


def test_an_endpoint_that_is_gone_is_connection_lost_until_it_is_back(
    janitor: Any, sqs_endpoint: str
) -> None:
    host, port = sqs_endpoint.split("://", 1)[1].rsplit(":", 1)
    proxy = Proxy(host, int(port)).start()
    address = proxy.port
    transport = janitor.transport(url=proxied(janitor.url, proxy), max_attempts="1")
    transport.setup()
    proxy.close()  # nothing listens there now
    with pytest.raises(ConnectionLost) as caught:
        transport.send(Envelope(ContractMessage(n=1)))
    assert f"127.0.0.1:{address}" in str(caught.value)
    with pytest.raises(ConnectionLost):
        transport.receive(max=1, timeout=0)
    with Proxy(host, int(port), port=address):
        transport.send(Envelope(ContractMessage(n=2)))
        [got] = transport.receive(max=1, timeout=2)
        assert got.envelope.message.n == 2
        transport.ack(got)
