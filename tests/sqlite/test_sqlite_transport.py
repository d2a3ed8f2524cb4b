"""``sqlite://`` beyond the contract: DSNs, claim tokens, counts, listing, publishing."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier.bus import Bus
from courier.envelope import Envelope
from courier.errors import (
    ConfigurationError,
    MessageTooLarge,
    PublishNotConfirmed,
    TransportError,
)
from courier.message import Event, Message
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.transports.base import Listable, Unacked
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier.transports.sqlite import SqliteTransport
from courier.transports.sqlite_schema import CLAIM, PROMOTE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from courier.transports.base import Received


class Job(Message):
    message_name: ClassVar[str] = "tests.sqlite.job"

    n: int


class Happened(Event):
    message_name: ClassVar[str] = "tests.sqlite.happened"

    n: int


def serializer() -> JsonSerializer:
    registry = MessageRegistry()
    registry.register(Job)
    registry.register(Happened)
    return JsonSerializer(registry)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., SqliteTransport]]:
    """Transports on one file; every one is closed after the test."""
    opened: list[SqliteTransport] = []

    def make(query: str = "", path: Path | None = None) -> SqliteTransport:
        dsn = f"sqlite:///{path or tmp_path / 'q.db'}?lease=0.5&poll_interval=0.01{query}"
        transport = SqliteTransport.from_dsn(Dsn.parse(dsn), name="q", serializer=serializer())
        opened.append(transport)
        return transport

    yield make
    for transport in opened:
        transport.close()


def one(
    transport: SqliteTransport, timeout: float = 2.0, queues: list[str] | None = None
) -> Received:
    got = transport.receive(queues, max=1, timeout=timeout)
    assert len(got) == 1, "expected a message"
    return got[0]


def numbers(received: list[Received]) -> list[int]:
    return [r.envelope.message.n for r in received if r.envelope]  # type: ignore[attr-defined]


# -- DSN and options ------------------------------------------------------------


def test_relative_path_is_against_the_working_directory_and_parents_are_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    transport = SqliteTransport.from_dsn(
        Dsn.parse("sqlite:///var/deep/courier.db?queue=email"), name="t", serializer=serializer()
    )
    try:
        assert transport.path == str(tmp_path / "var/deep/courier.db")
        assert not (tmp_path / "var").exists(), "configuring a transport touched the disk"
        transport.send(Envelope(Job(n=1)))
        assert (tmp_path / "var/deep/courier.db").is_file()
        assert transport.queue == "email"
    finally:
        transport.close()


def test_absolute_path_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    transport = open_transport(f"sqlite:///{path}", name="t", serializer=serializer())
    assert isinstance(transport, SqliteTransport)
    with transport:
        assert transport.path == str(path)
        assert (transport.queue, transport.lease, transport.poll_interval) == ("default", 30.0, 0.1)
        assert (transport.busy_timeout, transport.synchronous) == (5.0, "normal")
        assert transport.keepalive_interval() == 10.0
        assert transport.capabilities.max_message_size is None
        transport.setup()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("dsn", "complaint"),
    [
        ("sqlite:///q.db?lease_time=3", "unknown option 'lease_time'"),
        ("sqlite:///q.db?lease=0", "option 'lease'"),
        ("sqlite:///q.db?synchronous=off", "option 'synchronous'"),
        ("sqlite://q.db", "names a file"),
        ("sqlite:///", "names a file"),
    ],
)
def test_bad_dsns_are_configuration_errors(dsn: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        SqliteTransport.from_dsn(Dsn.parse(dsn), name="t", serializer=serializer())


def test_capabilities(make: Callable[..., SqliteTransport]) -> None:
    transport = make("&max_message_size=1000")
    caps = transport.capabilities
    assert caps.delay
    assert caps.priority
    assert caps.lease
    assert caps.native_dead_letter
    assert caps.delivery_count
    assert caps.listable
    assert caps.durable
    assert caps.unacked_on_reconnect is Unacked.KEPT
    assert caps.max_message_size == 1000
    assert SqliteTransport.capabilities.max_message_size is None
    assert isinstance(transport, Listable)
    assert transport.keepalive_interval() == pytest.approx(0.5 / 3)


def test_closed_transport_refuses_work(make: Callable[..., SqliteTransport]) -> None:
    transport = make()
    transport.send(Envelope(Job(n=1)))
    transport.close()
    transport.close()
    with pytest.raises(TransportError, match="closed"):
        transport.receive()


def test_opening_waits_while_another_process_switches_a_fresh_file_to_wal(
    tmp_path: Path,
) -> None:
    """SQLite answers the WAL switch with "locked" at once, ignoring the busy timeout,
    while another connection writes in the old journal mode: opening must wait instead."""
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE unrelated (x)")
    timer = threading.Timer(0.3, other.execute, ("COMMIT",))
    timer.start()
    transport = SqliteTransport(path, serializer=serializer(), busy_timeout=5)
    try:
        started = time.monotonic()
        transport.setup()
        assert time.monotonic() - started >= 0.2
    finally:
        timer.join()
        transport.close()
        other.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- claims and their tokens ------------------------------------------------------


def test_a_stale_holder_cannot_settle_or_renew_a_message_claimed_since(
    make: Callable[..., SqliteTransport],
) -> None:
    slow, fast = make(), make()
    slow.send(Envelope(Job(n=1)))
    stale = one(slow)
    time.sleep(0.6)  # the lease (0.5 s) runs out
    current = one(fast)
    assert current.delivery_count == 2
    slow.ack(stale)
    slow.renew(stale)
    slow.release(stale)
    slow.reject(stale, "too late")
    slow.ack_many([stale, stale])
    assert stale.envelope is not None
    slow.retry(stale, stale.envelope.with_(attempt=2, received=None), 0.0)
    [stats] = fast.stats()
    assert (stats.ready, stats.in_flight, stats.dead) == (0, 1, 0)
    fast.ack(current)
    assert fast.stats()[0].in_flight == 0


def test_a_lapsed_lease_nobody_took_can_still_be_acknowledged(
    make: Callable[..., SqliteTransport],
) -> None:
    transport = make()
    transport.send(Envelope(Job(n=1)))
    received = one(transport)
    time.sleep(0.6)
    assert transport.stats()[0].ready == 1  # lapsed: claimable again
    transport.ack(received)
    assert transport.receive(max=1, timeout=0.1) == []


def test_renew_extends_the_lease(make: Callable[..., SqliteTransport]) -> None:
    holder, other = make(), make()
    holder.send(Envelope(Job(n=1)))
    received = one(holder)
    for _ in range(6):
        time.sleep(0.2)
        holder.renew(received)
        assert other.receive(max=1) == []
    holder.ack(received)


def test_delivery_count_counts_lapses_and_releases_and_retry_resets_it(
    make: Callable[..., SqliteTransport],
) -> None:
    transport = make()
    transport.send(Envelope(Job(n=1)))
    first = one(transport)
    assert first.delivery_count == 1
    time.sleep(0.6)
    second = one(transport)
    assert second.delivery_count == 2
    transport.release(second)
    third = one(transport)
    assert third.delivery_count == 3
    assert third.envelope is not None
    transport.retry(third, third.envelope.with_(attempt=2, received=None), 0.0)
    fourth = one(transport)
    assert fourth.delivery_count == 1
    assert fourth.envelope is not None
    assert fourth.envelope.attempt == 2
    assert fourth.handle[0] == first.handle[0], "retry rewrites the row in place"
    transport.ack(fourth)


def test_a_retry_goes_behind_the_messages_already_waiting(
    make: Callable[..., SqliteTransport],
) -> None:
    transport = make()
    transport.send_many([Envelope(Job(n=n)) for n in range(3)])
    first = one(transport)
    assert first.envelope is not None
    transport.retry(first, first.envelope.with_(attempt=2, received=None), 0.0)
    got = transport.receive(max=3, timeout=1)
    assert numbers(got) == [1, 2, 0]
    transport.ack_many(got)


def test_delayed_and_claimed_rows_do_not_hold_up_ready_ones(
    make: Callable[..., SqliteTransport],
) -> None:
    transport = make()
    transport.send_many([Envelope(Job(n=n), delay=60) for n in range(100)])
    held = transport.receive(max=1)
    assert held == []
    transport.send(Envelope(Job(n=1000)))
    assert numbers([one(transport)]) == [1000]
    [stats] = transport.stats()
    assert (stats.ready, stats.in_flight, stats.delayed) == (0, 1, 100)


def test_queues_are_drained_in_the_order_given(make: Callable[..., SqliteTransport]) -> None:
    transport = make()
    transport.send(Envelope(Job(n=1)), "low")
    transport.send(Envelope(Job(n=2)), "high")
    got = transport.receive(["high", "low"], max=2)
    assert [(r.queue, n) for r, n in zip(got, numbers(got), strict=True)] == [
        ("high", 2),
        ("low", 1),
    ]
    transport.ack_many(got)


def test_a_mangled_headers_column_comes_back_undecodable(
    make: Callable[..., SqliteTransport], tmp_path: Path
) -> None:
    transport = make()
    transport.setup()
    with closing(sqlite3.connect(tmp_path / "q.db")) as connection, connection:
        connection.execute(
            "INSERT INTO courier_messages (queue, body, headers) VALUES ('default', ?, ?)",
            (b'{"n": 1}', '{"courier-type": 7}'),
        )
    received = one(transport)
    assert received.envelope is None
    assert received.raw == b'{"n": 1}'
    assert "headers" in str(received.error)
    transport.ack(received)


def test_a_foreign_producer_can_enqueue_with_plain_sql(
    make: Callable[..., SqliteTransport], tmp_path: Path
) -> None:
    """The INSERT shown in docs/transports/sqlite.md: a TEXT body, defaults for the rest."""
    transport = make("&queue=email")
    transport.send(Envelope(Job(n=1)))
    transport.setup()
    with closing(sqlite3.connect(tmp_path / "q.db")) as connection, connection:
        connection.execute(
            "INSERT INTO courier_messages (queue, message_id, body, headers)"
            """ VALUES ('email', 'a1b2', '{"n": 5}',"""
            """ '{"courier-type": "tests.sqlite.job", "courier-id": "a1b2"}')"""
        )
    got = transport.receive(max=2, timeout=1)
    assert numbers(got) == [1, 5], "a foreign row queues behind older ones"
    assert got[1].envelope is not None
    assert got[1].envelope.id == "a1b2"
    assert got[1].delivery_count == 1
    transport.ack_many(got)


def test_keepalive_and_worker_threads_share_the_connection(
    make: Callable[..., SqliteTransport],
) -> None:
    transport = make()
    transport.send_many([Envelope(Job(n=n)) for n in range(300)])
    held: list[Received] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def keepalive() -> None:
        while not done.is_set():
            for received in list(held):
                try:
                    transport.renew(received)
                except BaseException as error:  # pragma: no cover - the failure being tested
                    errors.append(error)

    thread = threading.Thread(target=keepalive)
    thread.start()
    try:
        handled = 0
        while handled < 300:
            batch = transport.receive(max=7, timeout=1)
            held[:] = batch
            transport.ack_many(batch)
            handled += len(batch)
    finally:
        done.set()
        thread.join()
    assert errors == []
    assert transport.stats()[0].ready == 0


# -- dead letters, stats, listing ---------------------------------------------------


def test_reject_keeps_the_row_dead_with_its_reason(
    make: Callable[..., SqliteTransport], tmp_path: Path
) -> None:
    transport = make()
    transport.send(Envelope(Job(n=1), id="doomed"))
    transport.reject(one(transport), "ValueError: no")
    [stats] = transport.stats()
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 1)
    assert transport.list() == []
    assert transport.find("doomed") is None
    with closing(sqlite3.connect(tmp_path / "q.db")) as connection:
        assert connection.execute("SELECT reason FROM courier_messages").fetchall() == [
            ("ValueError: no",)
        ]


def test_stats_count_each_state(make: Callable[..., SqliteTransport]) -> None:
    transport = make()
    transport.send_many([Envelope(Job(n=n)) for n in range(5)])
    transport.send(Envelope(Job(n=9), delay=60))
    claimed = transport.receive(max=2)
    transport.reject(claimed[0], "no")
    [stats] = transport.stats()
    assert (stats.queue, stats.ready, stats.in_flight, stats.delayed, stats.dead) == (
        "default",
        3,
        1,
        1,
        1,
    )
    assert transport.stats(["elsewhere"])[0].ready == 0


def test_queues_are_those_holding_a_row_and_the_recorded_subscriptions(
    make: Callable[..., SqliteTransport],
) -> None:
    transport, other = make(), make("&queue=elsewhere")  # one file, one set of queues
    assert transport.queues() == []
    transport.send(Envelope(Job(n=1)))
    transport.send(Envelope(Job(n=2), delay=60), "later")
    transport.send(Envelope(Job(n=3)), "doomed")
    transport.reject(one(transport, queues=["doomed"]), "no")  # dead rows count too
    other.send(Envelope(Job(n=4)), "held")
    held = one(other, queues=["held"])  # and rows in flight
    other.setup(topics={"users": ["welcome", "audit"]})  # recorded, still empty
    transport.publish(Envelope(Happened(n=5)), "users", ["welcome"])  # held and recorded
    expected = ["default", "doomed", "held", "later", "users.audit", "users.welcome"]
    assert transport.queues() == other.queues() == expected
    other.ack(held)
    transport.ack(one(transport, queues=["users.welcome"]))
    # An emptied queue is gone, unless setup recorded it as a subscription.
    assert transport.queues() == ["default", "doomed", "later", "users.audit", "users.welcome"]


def test_list_find_remove(make: Callable[..., SqliteTransport], tmp_path: Path) -> None:
    store = make("&queue=failed")
    envelopes = [Envelope(Job(n=n), id=f"m{n}") for n in range(4)]
    store.send_many(envelopes[:3])
    store.send(envelopes[3].with_(delay=60))
    with closing(sqlite3.connect(tmp_path / "q.db")) as connection, connection:
        connection.execute(
            "INSERT INTO courier_messages (queue, message_id, body) VALUES ('failed', 'bad', x'ff')"
        )
    assert [e.id for e in store.list()] == ["m0", "m1", "m2", "m3"]
    assert [e.id for e in store.list(limit=2)] == ["m0", "m1"]
    assert store.list("other") == []
    found = store.find("m2")
    assert found is not None
    assert found == envelopes[2]
    assert store.find("nope") is None
    held = one(store)  # m0, now in flight: not listed, not removable
    assert [e.id for e in store.list()] == ["m1", "m2", "m3"]
    assert store.remove("m0") is False
    assert store.remove("m1") is True
    assert store.remove("m1") is False
    assert [e.id for e in store.list()] == ["m2", "m3"]
    store.ack(held)


# -- publishing --------------------------------------------------------------------


def test_publish_reaches_recorded_subscriptions_too(make: Callable[..., SqliteTransport]) -> None:
    consumer, producer = make(), make()
    consumer.setup(topics={"users": ["welcome", "audit"]})
    assert producer.subscriptions("users") == ["audit", "welcome"]
    assert producer.subscriptions("nobody") == []
    event = Envelope(Happened(n=1))
    producer.publish(event, "users", ["crm"])
    for name in ("audit", "crm", "welcome"):
        received = one(consumer, queues=[f"users.{name}"])
        assert received.envelope is not None
        assert received.envelope.id == event.id
        consumer.ack(received)
    producer.publish(Envelope(Happened(n=2)), "nobody", [])


def test_publish_is_one_transaction(make: Callable[..., SqliteTransport], tmp_path: Path) -> None:
    transport = make()
    transport.setup()
    with closing(sqlite3.connect(tmp_path / "q.db")) as connection, connection:
        connection.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON courier_messages WHEN NEW.queue = 'users.b'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    event = Envelope(Happened(n=1))
    with pytest.raises(PublishNotConfirmed, match="refused") as caught:
        transport.publish(event, "users", ["a", "b", "c"])
    assert caught.value.failed_ids == (event.id,)
    assert transport.receive(["users.a", "users.c"], max=3) == []


def test_send_many_refuses_only_the_oversized(make: Callable[..., SqliteTransport]) -> None:
    transport = make("&max_message_size=20")
    small, large = Envelope(Job(n=1)), Envelope(Job(n=10**30))
    with pytest.raises(PublishNotConfirmed) as caught:
        transport.send_many([small, large])
    assert caught.value.failed_ids == (large.id,)
    assert numbers([one(transport)]) == [1]


# -- claims stay fast ------------------------------------------------------------


def test_claims_walk_an_index_in_serving_order(make: Callable[..., SqliteTransport]) -> None:
    transport = make()
    transport.setup()
    with closing(sqlite3.connect(transport.path)) as connection:
        plan = connection.execute("EXPLAIN QUERY PLAN " + CLAIM, (1, 2.0, 30.0, "q", 10))
        claim = " ".join(row[3] for row in plan)
        promote = " ".join(
            row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + PROMOTE, ("q", 1.0))
        )
    assert "USING INDEX courier_ready (queue=?)" in claim
    assert "TEMP B-TREE" not in claim, "the claim sorts instead of walking the index"
    assert "USING INDEX courier_waiting (queue=? AND state=? AND available_at<?)" in promote


@pytest.mark.slow
def test_a_claim_is_fast_with_a_million_rows_waiting(make: Callable[..., SqliteTransport]) -> None:
    transport = make()
    transport.setup()
    body = b'{"n": 1}'
    headers = (
        '{"content-type":"application/json","courier-type":"tests.sqlite.job","courier-id":"x"}'
    )
    now = time.time()
    with closing(sqlite3.connect(transport.path, isolation_level=None)) as connection:
        connection.execute("BEGIN")
        # 900k ready behind 100k delayed (older, more urgent), in two queues.
        connection.executemany(
            "INSERT INTO courier_messages (queue, message_id, body, headers, priority, state,"
            " available_at) VALUES (?, 'x', ?, ?, ?, ?, ?)",
            (
                (
                    "default" if n % 2 else "other",
                    body,
                    headers,
                    9 if n < 100_000 else 0,
                    1 if n < 100_000 else 0,
                    now + 3600 if n < 100_000 else now,
                )
                for n in range(1_000_000)
            ),
        )
        connection.execute("COMMIT")
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        got = transport.receive(max=10)
        timings.append(time.perf_counter() - started)
        assert len(got) == 10
        transport.ack_many(got)
    assert sorted(timings)[10] < 0.01, f"median claim+decode of 10 took {sorted(timings)[10]:.4f}s"


def test_a_dispatch_past_the_decoders_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """A 5 MB message would only ever come back as an invalid one: refuse it now."""

    class Blob(Message):
        message_name: ClassVar[str] = "tests.sqlite.blob"
        data: str

    bus = Bus(transports={"jobs": f"sqlite:///{tmp_path / 'q.db'}?queue=jobs"})
    bus.route(Blob, "jobs")
    try:
        with pytest.raises(MessageTooLarge) as caught:
            bus.dispatch(Blob(data="x" * (5 * 1024 * 1024)))
        assert caught.value.limit == bus.serializer.max_body == 4 * 1024 * 1024
        with pytest.raises(PublishNotConfirmed, match="1 of 2 messages were not sent"):
            bus.dispatch_many([Blob(data="small"), Blob(data="y" * (5 * 1024 * 1024))])
        assert bus.transport("jobs").stats()[0].ready == 1
    finally:
        bus.close()


def test_a_messages_ttr_is_its_lease(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'q.db'}?lease=30&poll_interval=0.01"
    transport = SqliteTransport.from_dsn(Dsn.parse(dsn), name="q", serializer=serializer())
    transport.send(Envelope(Job(n=1), ttr=0.3))
    transport.send(Envelope(Job(n=2)))
    first = transport.receive(max=2)
    assert numbers(first) == [1, 2]
    # Only the one with a ttr of 0.3 s comes back; the other keeps its 30 s lease.
    again = transport.receive(max=2, timeout=3)
    assert numbers(again) == [1]
    transport.renew(again[0])  # renewing keeps the message's own lease, not the DSN's
    assert transport.receive(max=1, timeout=0.15) == []
    assert numbers(transport.receive(max=1, timeout=3)) == [1]


def test_a_lone_worker_never_warns_of_a_lost_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keepalive renews while acknowledgements are on their way: no false alarm."""
    from courier.worker import Worker, WorkerOptions

    dsn = f"sqlite:///{tmp_path / 'q.db'}?queue=jobs&lease=0.15&poll_interval=0.01"
    bus = Bus(transports={"jobs": dsn})
    bus.route(Job, "jobs")
    handled: list[int] = []

    @bus.handler(Job)
    def handle(job: Job) -> None:
        handled.append(job.n)
        if job.n % 50 == 0:
            time.sleep(0.01)  # let renewals land between handling and acknowledging

    try:
        bus.dispatch_many([Job(n=n) for n in range(3000)])
        worker = Worker(bus, ["jobs"], options=WorkerOptions(stop_when_empty=True, sleep=0.05))
        with caplog.at_level(logging.DEBUG, logger="courier"):
            worker.run()
    finally:
        bus.close()
    assert sorted(handled) == list(range(3000))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
