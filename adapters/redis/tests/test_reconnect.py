"""Connections cut under the transport, through courier.testing.proxy.

Redis keeps a consumer's pending entries when its connection dies: they
belong to the consumer's name, not to the connection. So after a cut the
acknowledgement of a message received before it goes through on the next
connection (``Unacked.KEPT``), and an entry whose delivery was lost with
the connection is reclaimed after the lease. redis-py reconnects on the
next command; what cannot be reached is ``ConnectionLost``, and the worker
backs off.
"""

from __future__ import annotations

import selectors
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
from courier.transports.base import Unacked
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.redis


class Job(Message):
    message_name: ClassVar[str] = "courier.redis-test.job"

    n: int


class Proxy(TcpProxy):
    """A TcpProxy that survives accepting a connection while paused.

    The core's registers a connection accepted during ``pause()`` with no
    events, which the selector refuses, and its thread dies; redis-py
    reconnects at once after a timeout, so it does. Here a paused side is
    still read (nothing is forwarded until ``resume()``), which keeps the
    network just as silent.
    """

    def _interest(self, side: Any) -> int:
        return super()._interest(side) or selectors.EVENT_READ


@pytest.fixture
def proxy(redis_url: str) -> Any:
    dsn = Dsn.parse(redis_url)
    with Proxy(dsn.host or "127.0.0.1", dsn.port or 6379) as running:
        yield running


def proxied(url: str, port: int) -> str:
    dsn = Dsn.parse(url)
    return url.replace(f"{dsn.host}:{dsn.port}", f"127.0.0.1:{port}", 1)


def test_an_ack_after_a_cut_goes_through_on_the_new_connection(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy.port))
    assert transport.capabilities.unacked_on_reconnect is Unacked.KEPT
    transport.setup()
    transport.send(Envelope(ContractMessage(n=1)))
    [got] = transport.receive(max=1, timeout=5)
    assert proxy.cut() >= 1
    transport.ack(got)  # a new connection: the entry is still pending, and now gone
    stream = janitor.stream(transport.queue)
    assert janitor.raw.xlen(stream) == 0
    assert janitor.raw.xpending(stream, "courier")["pending"] == 0
    assert transport.receive(max=1, timeout=0.3) == []
    assert proxy.accepted >= 2


def test_an_ack_written_into_a_dead_connection_is_sent_again_on_the_next(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy.port))
    transport.setup()
    transport.send_many([Envelope(ContractMessage(n=n)) for n in range(3)])
    got = transport.receive(max=3, timeout=5)
    proxy.pause()  # the acknowledgement leaves the client but never reaches Redis
    transport.ack_many(got)
    assert proxy.cut() >= 1
    stream = janitor.stream(transport.queue)
    assert janitor.raw.xpending(stream, "courier")["pending"] == 3
    proxy.resume()
    assert transport.receive(max=1, timeout=0.2) == []  # notices, reconnects, acknowledges again
    assert janitor.raw.xpending(stream, "courier")["pending"] == 0
    assert janitor.raw.xlen(stream) == 0


def test_a_cut_during_a_blocking_read_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy.port))
    transport.setup()
    assert transport.receive(max=1, timeout=0) == []
    threading.Timer(0.3, proxy.cut).start()
    sender = janitor.transport(transport.queue)
    threading.Timer(0.6, lambda: sender.send(Envelope(ContractMessage(n=1)))).start()
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        try:
            got = transport.receive(max=1, timeout=1)
        except ConnectionLost:
            continue  # the cut may surface once; the next call reconnects
    assert [r.envelope.id for r in got]
    assert proxy.cuts >= 1
    transport.ack_many(got)


def test_a_delivery_lost_with_its_connection_is_reclaimed_after_the_lease(janitor: Any) -> None:
    transport = janitor.transport(lease="0.5")
    transport.setup()
    transport.receive(max=1, timeout=0)
    transport.send(Envelope(ContractMessage(n=1)))
    # The server delivered it to this consumer, but the reply never arrived.
    stream = janitor.stream(transport.queue)
    janitor.raw.xreadgroup("courier", transport.consumer, {stream: ">"}, count=1)
    assert transport.receive(max=1, timeout=0.2) == []
    [got] = transport.receive(max=1, timeout=3)
    assert got.envelope.message.n == 1
    assert got.delivery_count == 2
    transport.ack(got)


def test_an_unreachable_server_is_connection_lost_and_the_next_call_reconnects(
    janitor: Any, redis_url: str
) -> None:
    dsn = Dsn.parse(redis_url)
    proxy = TcpProxy(dsn.host or "127.0.0.1", dsn.port or 6379).start()
    port = proxy.port
    transport = janitor.transport(url=proxied(janitor.url, port))
    transport.setup()
    transport.send(Envelope(ContractMessage(n=1)))
    [held] = transport.receive(max=1, timeout=5)
    generation = transport.generation
    proxy.close()  # the "server" is gone: connections refused
    with pytest.raises(
        ConnectionLost, match=r"cannot connect to Redis at 127\.0\.0\.1:\d+: connection refused"
    ):
        transport.receive(max=1, timeout=0.5)
    with pytest.raises(ConnectionLost):
        transport.ack(held)
    assert transport.generation > generation
    with TcpProxy(dsn.host or "127.0.0.1", dsn.port or 6379, port=port):
        transport.ack(held)  # the handle outlived the connection
        transport.send(Envelope(ContractMessage(n=2)))
        [got] = transport.receive(max=1, timeout=5)
        assert got.envelope.message.n == 2
        transport.ack(got)


def test_a_silent_network_is_noticed_within_the_socket_timeout(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(
        url=proxied(janitor.url, proxy.port), socket_timeout="1", connect_timeout="1"
    )
    transport.setup()
    assert transport.receive(max=1, timeout=0) == []
    proxy.pause()
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="Timeout"):
        transport.receive(max=1, timeout=0.2)
    assert time.monotonic() - started < 5
    proxy.resume()
    proxy.cut()
    transport.send(Envelope(ContractMessage(n=3)))
    [got] = transport.receive(max=1, timeout=5)
    transport.ack(got)


def test_a_worker_survives_cuts_mid_stream_and_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    queue = janitor.name()
    total = 300
    producer = Bus(transports={"work": janitor.dsn(queue)})
    producer.route(Job, "work")
    producer.transport("work").setup()
    producer.dispatch_many([Job(n=n) for n in range(total)])
    producer.close()

    consumer = Bus(transports={"work": proxied(janitor.dsn(queue), proxy.port)})
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
            wait_for(lambda mark=mark: len(set(ledger)) >= mark, timeout=20)
            assert proxy.cut() >= 1
        wait_for(lambda: len(set(ledger)) == total, timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=10)
    consumer.close()
    assert set(ledger) == set(range(total))
    duplicates = sum(count - 1 for count in Counter(ledger).values())
    # Only deliveries whose reply a cut swallowed come again (after the lease).
    assert duplicates <= 3 * 10
    stream = janitor.stream(queue)
    wait_for(lambda: janitor.raw.xlen(stream) == 0)


def test_publishing_through_cuts_sends_everything_or_names_what_failed(
    janitor: Any, proxy: TcpProxy
) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=proxied(janitor.url, proxy.port))
    transport.setup()
    batch = [Envelope(ContractMessage(n=n)) for n in range(2000)]
    stop = threading.Event()

    def cutter() -> None:
        # The first cut at once: setup()'s connection dies under the first
        # batches, however fast the rest is sent (a quiet machine sends all
        # 2,000 in less than the 30 ms the cuts are apart).
        for _ in range(5):
            proxy.cut()
            if stop.wait(0.03):
                return

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
    consumer = janitor.transport(queue)  # straight to the server
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while len(seen) < len(batch) and time.monotonic() < deadline:
        got = consumer.receive(max=500, timeout=1)
        seen.update(r.envelope.id for r in got if r.envelope)
        consumer.ack_many(got)
    assert seen == {e.id for e in batch}
    assert proxy.cuts >= 1
