"""What is particular to Redis Streams, checked on the real server.

Streams and consumer groups (one XREADGROUP, COUNT and BLOCK, consumers
named after the worker), acknowledging (XACK + XDEL, never trimming what is
pending), reclaiming (idle entries after the lease, renewals from another
thread, honest delivery counts), delays (the sorted set, the Lua move, races,
restarts), pub/sub (recorded subscriptions), the dead stream, stats, the
failure-store verbs and secrets in errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from courier import Bus
from courier.envelope import Envelope, ErrorDetails
from courier.errors import ConnectionLost
from courier.testing.contract import ContractEvent, ContractMessage, contract_serializer
from courier.transports.base import KEPT_HEADER, Received
from courier.worker import Worker, WorkerOptions
from courier_redis import RedisTransport
from courier_redis.wire import member

pytestmark = pytest.mark.redis


def envelope(n: int = 1, **changes: Any) -> Envelope:
    return Envelope(ContractMessage(n=n), **changes)


def receive(
    transport: RedisTransport, count: int = 1, timeout: float = 5.0, **kw: Any
) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(max=count - len(got), timeout=deadline - time.monotonic(), **kw)
    return got


def counting(transport: RedisTransport, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the commands and scripts the transport sends, by name."""
    seen: Counter[str] = Counter()
    link = transport.link

    def wrap(method: Callable[..., Any], label: Callable[..., str]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            seen[label(*args)] += 1
            return method(*args)

        return counted

    monkeypatch.setattr(link, "run", wrap(link.run, lambda script, *_: script.name))
    monkeypatch.setattr(link, "fire", wrap(link.fire, lambda script, *_: script.name))
    monkeypatch.setattr(link, "call", wrap(link.call, lambda *args: str(args[0])))
    monkeypatch.setattr(link, "read", wrap(link.read, lambda key, *args: args[0]))
    return seen


# -- streams and groups ----------------------------------------------------------


def test_a_queue_is_a_stream_with_one_group_and_a_named_consumer(janitor: Any) -> None:
    transport = janitor.transport()
    transport.identify("mailer-3")
    transport.setup()
    transport.send(envelope(1))
    [got] = receive(transport)
    stream = janitor.stream(transport.queue)
    [group] = janitor.raw.xinfo_groups(stream)
    assert group["name"] == b"courier"
    [consumer] = janitor.raw.xinfo_consumers(stream, "courier")
    assert consumer["name"].decode() == transport.consumer
    assert transport.consumer.startswith("mailer-3.")
    assert consumer["pending"] == 1
    entry = janitor.raw.xrange(stream)[0][1]
    assert entry[b"body"] == b'{"n":1,"text":"hello"}'
    assert entry[b"courier-type"] == b"courier.contract.message"
    assert entry[b"courier-id"] == got.envelope.id.encode()
    transport.ack(got)


def test_two_transports_with_one_worker_id_are_two_consumers(janitor: Any) -> None:
    queue = janitor.name()
    first, second = janitor.transport(queue, prefetch="1"), janitor.transport(queue, prefetch="1")
    for transport in (first, second):
        transport.identify("same-id")
    first.setup()
    first.send_many([envelope(n) for n in range(4)])
    got = first.receive(max=2, timeout=2) + second.receive(max=2, timeout=2)
    assert len({r.envelope.id for r in got}) == 4
    consumers = janitor.raw.xinfo_consumers(janitor.stream(queue), "courier")
    assert {c["name"].decode(): c["pending"] for c in consumers} == {
        first.consumer: 2,
        second.consumer: 2,
    }
    first.ack_many(got[:2])
    second.ack_many(got[2:])


def test_ack_many_deletes_in_one_script_and_never_touches_what_is_pending(
    transport: RedisTransport, janitor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport.send_many([envelope(n) for n in range(10)])
    got = receive(transport, 10)
    seen = counting(transport, monkeypatch)
    transport.ack_many(got[:6])
    assert seen == Counter({"ack": 1})
    stream = janitor.stream(transport.queue)
    assert janitor.raw.xlen(stream) == 4  # acknowledged entries are gone...
    pending = janitor.raw.xpending(stream, "courier")
    assert pending["pending"] == 4  # ...the held ones stay, pending
    assert {e[0].decode() for e in janitor.raw.xrange(stream)} == {r.handle for r in got[6:]}
    transport.ack_many(got[6:])
    assert janitor.raw.xlen(stream) == 0


def test_acks_survive_redis_forgetting_its_scripts(transport: RedisTransport, janitor: Any) -> None:
    transport.send_many([envelope(n) for n in range(4)])
    got = receive(transport, 4)
    transport.ack_many(got[:2])
    janitor.raw.script_flush()  # as after a restart: the fired script is unknown
    transport.ack_many(got[2:])
    assert transport.receive(max=1, timeout=0.2) == []  # reads the NOSCRIPT, runs it loaded
    stream = janitor.stream(transport.queue)
    assert janitor.raw.xlen(stream) == 0
    assert janitor.raw.xpending(stream, "courier")["pending"] == 0


def test_receive_blocks_without_polling(
    transport: RedisTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport.receive(max=1, timeout=0)  # groups made, first promote and reclaim done
    seen = counting(transport, monkeypatch)
    started = time.monotonic()
    assert transport.receive(max=10, timeout=1.0) == []
    assert time.monotonic() - started >= 0.95
    # BLOCK waits in Redis; the loop wakes only to look at delays (every 0.1 s
    # here) and reclaims (every second), never to poll the stream.
    assert seen["XREADGROUP"] <= 12
    waiter = threading.Thread(target=lambda: time.sleep(0.3) or transport.send(envelope(1)))
    waiter.start()
    started = time.monotonic()
    got = transport.receive(max=10, timeout=5.0)
    waiter.join()
    assert [r.envelope.message.n for r in got] == [1]
    assert time.monotonic() - started < 1.0
    transport.ack_many(got)


def test_several_queues_are_one_xreadgroup_and_the_first_comes_first(
    janitor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = janitor.name(), janitor.name()
    transport = janitor.transport(first)
    transport.setup([second])
    transport.receive([first, second], max=1, timeout=0)  # warm up: groups, promote, reclaim
    transport.send_many([envelope(n) for n in range(3)], second)
    transport.send_many([envelope(n) for n in range(10, 13)], first)
    seen = counting(transport, monkeypatch)
    got = transport.receive([first, second], max=4, timeout=2)
    assert seen["XREADGROUP"] == 1
    # COUNT applies to each stream: what exceeds max comes next, before any new read.
    assert [(r.queue, r.envelope.message.n) for r in got] == [
        (first, 10),
        (first, 11),
        (first, 12),
        (second, 0),
    ]
    more = transport.receive([first, second], max=4, timeout=2)
    assert [(r.queue, r.envelope.message.n) for r in more] == [(second, 1), (second, 2)]
    assert seen["XREADGROUP"] == 1
    transport.ack_many(got + more)


def test_a_limit_caps_what_one_read_takes(transport: RedisTransport, janitor: Any) -> None:
    transport.send_many([envelope(n) for n in range(10)])
    transport.limit_prefetch(3)
    got = transport.receive(max=10, timeout=2)
    assert len(got) == 3
    assert janitor.raw.xpending(janitor.stream(transport.queue), "courier")["pending"] == 3
    transport.ack_many(got)


# -- leases, reclaims, delivery counts ---------------------------------------------


def test_a_dead_consumers_entry_is_reclaimed_after_the_lease_with_its_count(
    janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    queue = janitor.name()
    holder = janitor.transport(queue, lease="1")
    holder.setup()
    holder.send(envelope(1))
    [held] = receive(holder)
    taker = janitor.transport(queue, lease="1", reclaim_interval="0.2")
    started = time.monotonic()
    [again] = receive(taker, timeout=5)
    assert time.monotonic() - started >= 0.7
    assert again.envelope.id == held.envelope.id
    assert again.delivery_count == 2
    with caplog.at_level(logging.WARNING, logger="courier.redis"):
        holder.renew(held)  # too late: another consumer has it now
    assert "lease on" in caplog.text
    pending = janitor.raw.xpending_range(janitor.stream(queue), "courier", "-", "+", 10)
    assert [(p["consumer"].decode(), p["times_delivered"]) for p in pending] == [
        (taker.consumer, 2)
    ]
    taker.ack(again)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="courier.redis"):
        holder.renew(held)  # acknowledged meanwhile: not a lost lease
    assert caplog.text == ""


def test_reclaims_hand_out_one_entry_at_a_time_oldest_first(janitor: Any) -> None:
    queue = janitor.name()
    holder = janitor.transport(queue, lease="0.5")
    holder.setup()
    holder.send_many([envelope(n) for n in range(5)])
    assert len(receive(holder, 5)) == 5
    time.sleep(0.6)
    taker = janitor.transport(queue, lease="0.5")
    batches = [taker.receive(max=10, timeout=1) for _ in range(5)]
    assert [[r.envelope.message.n for r in batch] for batch in batches] == [[0], [1], [2], [3], [4]]
    assert {r.delivery_count for batch in batches for r in batch} == {2}
    taker.ack_many([r for batch in batches for r in batch])


def test_read_ahead_is_pending_and_goes_back_when_the_worker_stops(
    transport: RedisTransport, janitor: Any
) -> None:
    transport.send_many([envelope(n) for n in range(30)])
    [first] = transport.receive(max=1, timeout=2)
    stream = janitor.stream(transport.queue)
    assert janitor.raw.xpending(stream, "courier")["pending"] == 30
    transport.stop_receiving()  # the worker stops: what it never asked for goes back
    other = janitor.transport(transport.queue)
    rest = receive(other, 29)
    assert sorted(r.envelope.message.n for r in rest) == list(range(1, 30))
    assert {r.delivery_count for r in rest} == {2}
    other.ack_many(rest)
    transport.ack(first)


def test_read_ahead_reclaimed_by_another_meanwhile_is_not_handed_out_twice(
    janitor: Any,
) -> None:
    queue = janitor.name()
    slow = janitor.transport(queue, lease="0.6")
    slow.setup()
    slow.send_many([envelope(n) for n in range(3)])
    [first] = slow.receive(max=1, timeout=2)  # two more wait, read ahead
    time.sleep(0.7)
    slow.renew(first)  # the worker's keepalive knows only the one in hand
    rival = janitor.transport(queue, lease="0.6")
    [taken] = rival.receive(max=1, timeout=2)  # one of them, idle past the lease
    rest = slow.receive(max=10, timeout=0.5)
    assert {r.envelope.message.n for r in rest} | {taken.envelope.message.n} == {1, 2}
    assert taken.envelope.message.n not in {r.envelope.message.n for r in rest}
    slow.ack_many([first, *rest])
    rival.ack(taken)


def test_reclaims_are_looked_for_every_so_often_not_on_every_receive(
    janitor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = janitor.transport(reclaim_interval="1", delay_check="5")
    transport.setup()
    transport.send_many([envelope(n) for n in range(20)])
    seen = counting(transport, monkeypatch)
    got = [transport.receive(max=1, timeout=1)[0] for _ in range(20)]
    assert seen["reclaim"] == 1
    assert seen["promote"] == 1
    assert seen["XREADGROUP"] == 1  # the rest was read ahead (prefetch)
    transport.ack_many(got)


def test_renew_from_another_thread_while_a_receive_blocks(janitor: Any) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, lease="1")
    transport.setup()
    transport.send(envelope(1))
    [held] = receive(transport)
    other = janitor.name()
    blocking = threading.Thread(target=lambda: transport.receive([other], max=1, timeout=3))
    blocking.start()
    time.sleep(0.2)
    try:
        # Held for three leases, renewed from this thread; nobody reclaims it.
        rival = janitor.transport(queue, lease="1", reclaim_interval="0.1")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            started = time.monotonic()
            transport.renew(held)
            assert time.monotonic() - started < 0.5, "renew waited for the blocked read"
            assert rival.receive(max=1, timeout=0.3) == []
    finally:
        blocking.join()
    transport.ack(held)


def test_release_and_reclaims_raise_the_count_renewals_do_not(transport: RedisTransport) -> None:
    transport.send(envelope(1))
    [first] = receive(transport)
    transport.renew(first)
    transport.release(first)
    [second] = receive(transport)
    transport.release(second)
    [third] = receive(transport)
    assert [first.delivery_count, second.delivery_count, third.delivery_count] == [1, 2, 3]
    transport.ack(third)


def test_close_forgets_the_consumer_unless_it_holds_something(janitor: Any) -> None:
    queue = janitor.name()
    idle, holding = janitor.transport(queue), janitor.transport(queue)
    idle.setup()
    assert idle.receive(max=1, timeout=0) == []
    holding.send(envelope(1))
    assert receive(holding)
    idle.close()
    holding.close()
    consumers = janitor.raw.xinfo_consumers(janitor.stream(queue), "courier")
    assert [c["name"].decode() for c in consumers] == [holding.consumer]


# -- delays ------------------------------------------------------------------


def test_a_delay_waits_in_the_sorted_set_and_zero_is_immediate(
    transport: RedisTransport, janitor: Any
) -> None:
    transport.send(envelope(1, delay=0.6))
    keys = transport.keys()
    assert janitor.raw.zcard(keys.delayed) == 1
    assert janitor.raw.xlen(keys.stream) == 0
    assert transport.stats()[0].delayed == 1
    started = time.monotonic()
    [got] = receive(transport)
    assert 0.5 <= time.monotonic() - started < 2.0
    assert janitor.raw.zcard(keys.delayed) == 0
    started = time.monotonic()
    transport.retry(got, got.envelope.with_(attempt=2, received=None), 0.0)
    [again] = receive(transport)
    assert time.monotonic() - started < 0.5
    assert again.envelope.attempt == 2
    assert again.delivery_count == 1
    transport.ack(again)


def test_racing_workers_move_each_delayed_message_once(janitor: Any) -> None:
    queue = janitor.name()
    producer = janitor.transport(queue)
    producer.setup()
    producer.send_many([envelope(n, delay=0.3) for n in range(60)])
    workers = [janitor.transport(queue, delay_check="0.01") for _ in range(3)]
    seen: list[int] = []
    lock = threading.Lock()

    def work(transport: RedisTransport) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = transport.receive(max=10, timeout=0.2)
            transport.ack_many(got)
            with lock:
                seen.extend(r.envelope.message.n for r in got)
                if len(seen) >= 60:
                    deadline = min(deadline, time.monotonic() + 0.5)  # late duplicates?

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(60))


def test_a_delayed_message_survives_the_transport_that_sent_it(janitor: Any) -> None:
    queue = janitor.name()
    producer = janitor.transport(queue)
    sent = producer.send(envelope(1, delay=0.3))
    producer.close()
    consumer = janitor.transport(queue)
    [got] = receive(consumer)
    assert got.envelope.id == sent.id
    consumer.ack(got)


def test_a_foreign_member_in_the_delay_set_becomes_an_invalid_message(
    transport: RedisTransport, janitor: Any
) -> None:
    janitor.raw.zadd(transport.keys().delayed, {b"not one of ours": 0})
    janitor.raw.zadd(transport.keys().delayed, {member([b"body", b'{"n": 3}']): 0})
    got = sorted(receive(transport, 2), key=lambda r: r.raw)
    assert [r.envelope for r in got] == [None, None]
    assert [r.raw for r in got] == [b"not one of ours", b'{"n": 3}']
    assert "courier-type" in str(got[1].error)
    transport.ack_many(got)
    assert janitor.raw.zcard(transport.keys().delayed) == 0


# -- events ------------------------------------------------------------------


def test_a_producer_that_knows_no_handler_reaches_every_recorded_subscription(
    janitor: Any, transport: RedisTransport
) -> None:
    topic = janitor.name("topic")
    transport.setup(topics={topic: ["mail", "audit"]})
    assert transport.subscriptions(topic) == ["audit", "mail"]
    producer = janitor.transport(transport.queue)  # imports no handler: names nothing
    producer.publish(Envelope(ContractEvent(n=1)), topic, [])
    producer.publish(Envelope(ContractEvent(n=2), delay=0.2), topic, ["extra"])
    for name in ("mail", "audit"):
        got = receive(transport, 2, queues=[f"{topic}.{name}"])
        assert sorted(r.envelope.message.n for r in got) == [1, 2]
        transport.ack_many(got)
    [extra] = receive(transport, queues=[f"{topic}.extra"])
    assert extra.envelope.message.n == 2
    transport.ack(extra)
    assert f"{topic}.audit" in transport.queues()
    assert transport.queue in transport.queues()


# -- settling, stats, the failure-store verbs ------------------------------------


def test_reject_moves_the_entry_to_the_dead_stream_with_the_reason(
    transport: RedisTransport, janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sent = transport.send(envelope(1))
    [got] = receive(transport)
    with caplog.at_level(logging.WARNING, logger="courier.redis"):
        transport.reject(got, "NoSuchCustomer: 42")
    assert "NoSuchCustomer: 42" in caplog.text
    [(_, fields)] = janitor.raw.xrange(transport.keys().dead)
    assert fields[b"courier-id"] == sent.id.encode()
    assert fields[b"courier-rejected"] == b"NoSuchCustomer: 42"
    assert janitor.raw.xlen(transport.keys().stream) == 0


def test_stats_ready_in_flight_delayed_dead(janitor: Any) -> None:
    transport = janitor.transport(prefetch="1")
    transport.setup()
    transport.send_many([envelope(n) for n in range(3)])
    transport.send(envelope(9, delay=30))
    [one] = receive(transport)
    transport.reject(one, "dead")
    [two] = receive(transport)
    stats = transport.stats()[0]
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (1, 1, 1, 1)
    never = transport.stats(["never-used-queue"])[0]
    assert (never.ready, never.in_flight, never.delayed, never.dead) == (0, 0, 0, 0)
    transport.ack(two)


def test_a_stream_is_a_failure_store(transport: RedisTransport) -> None:
    error = ErrorDetails("app.Boom", "first", failed_at=1.0)
    records = [envelope(n, error=error) for n in range(3)]
    for record in records:
        assert transport.keep(record) == 1
    assert transport.keep(records[1].with_(error=ErrorDetails("app.Boom", "again"))) == 2
    listed = transport.list()
    assert [e.id for e in listed] == [records[0].id, records[2].id, records[1].id]
    assert listed[2].headers[KEPT_HEADER] == "2"
    assert [e.id for e in transport.list(limit=1)] == [records[0].id]
    # courier failed retry: sends a copy first, then removes the oldest one.
    transport.send(records[0])
    assert transport.remove(records[0].id) is True
    assert [e.id for e in transport.list()] == [records[2].id, records[1].id, records[0].id]
    assert transport.remove(records[0].id) is True
    assert transport.remove(records[0].id) is False
    assert transport.find(records[2].id) is not None
    transport.send(envelope(7, delay=60))
    assert [e.message.n for e in transport.list()] == [2, 1, 7]  # type: ignore[attr-defined]
    fresh = RedisTransport(transport.dsn, name="other", serializer=contract_serializer())
    delayed_id = transport.list()[-1].id
    assert fresh.find(delayed_id) is not None  # found without a list first
    assert fresh.remove(delayed_id) is True
    fresh.close()


def test_connection_errors_never_show_the_password(
    redis_url: str, janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = redis_url.replace("redis://", "redis://intruder:s3cr3t-wrong-pw@", 1)
    transport = janitor.transport(url=url)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionLost) as caught:
        transport.send(envelope(1))
    assert "AuthenticationError: invalid username-password pair" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or "s3cr3t" not in str(caught.value.__context__)
    for text in (str(caught.value), repr(caught.value), repr(transport), caplog.text):
        assert "s3cr3t-wrong-pw" not in text


def test_threads_can_share_one_transport(transport: RedisTransport) -> None:
    def produce(start: int) -> None:
        for n in range(start, start + 50):
            transport.send(envelope(n))

    threads = [threading.Thread(target=produce, args=(start,)) for start in (0, 50, 100, 150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got: list[Received] = []
    while len(got) < 200 and (more := transport.receive(max=100, timeout=2)):
        transport.ack_many(more)
        got += more
    assert sorted(r.envelope.message.n for r in got if r.envelope) == list(range(200))


def test_connections_are_named_after_the_worker(janitor: Any) -> None:
    transport = janitor.transport()
    transport.setup()  # connected before the worker starts, as `courier consume` does
    transport.identify("mailer-9")
    assert transport.receive(max=1, timeout=0) == []
    names = [client["name"] for client in janitor.raw.client_list()]
    assert f"courier:redis:{transport.consumer}" in names
    assert transport.consumer.startswith("mailer-9.")


@pytest.fixture
def acl_user(janitor: Any) -> Any:
    """An ACL user with a password, made on the test server for one test."""
    name, password = f"courier-{janitor.tag}", f"pw-{janitor.tag}-s3cr3t"
    janitor.raw.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys="*", channels="*", commands=["+@all"]
    )
    try:
        yield name, password
    finally:
        janitor.raw.acl_deluser(name)


def test_an_acl_user_and_password_from_the_dsn_never_show(
    janitor: Any, redis_url: str, acl_user: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = acl_user
    url = redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    queue = janitor.name()
    bus = Bus(transports={"work": janitor.dsn(queue, url=url)})
    bus.route(ContractMessage, "work")
    handled: list[int] = []
    bus.add_handler(lambda message: handled.append(message.n), ContractMessage)
    with caplog.at_level(logging.DEBUG):
        bus.setup()
        bus.dispatch_many([ContractMessage(n=n) for n in range(5)])
        bus.dispatch(ContractMessage(n=5), delay=0.1)
        Worker(bus, ["work"], options=WorkerOptions(limit=6, sleep=0.1, time_limit=20)).run()
        transport = bus.transport("work")
        assert isinstance(transport, RedisTransport)
        texts = [repr(transport), str(transport.dsn), repr(transport.options), repr(bus)]
        wrong = RedisTransport(
            transport.dsn.render(reveal=True).replace(password, "not-" + password),
            name="wrong",
            serializer=contract_serializer(),
        )
        with pytest.raises(ConnectionLost) as caught:
            wrong.send(envelope(1))
        texts += [str(caught.value), repr(caught.value), repr(wrong)]
        wrong.close()
        bus.close()
    assert sorted(handled) == list(range(6))
    texts.append(caplog.text)
    for text in texts:
        assert password not in text
    assert not [c for c in janitor.raw.client_list() if c["user"] == user]  # all closed
