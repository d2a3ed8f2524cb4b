"""What is particular to beanstalkd, checked on the real server.

Puts (priority, delay and TTR always explicit), reserves (queue order,
bytes, DEADLINE_SOON), touch, retries as put-then-delete, bury and the
buried-job tools, delivery counts from ``stats-job``, the server's job
size, stats, and the subscription records.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import greenstalk
import pytest

from courier.envelope import Envelope
from courier.errors import (
    ConfigurationError,
    MessageDecodingFailed,
    MessageTooLarge,
    PublishNotConfirmed,
)
from courier.serializer import pack
from courier.testing.contract import ContractEvent, ContractMessage
from courier.transports.buried import HoldsBuried
from courier_beanstalk import BeanstalkTransport

pytestmark = pytest.mark.beanstalk


def envelope(n: int = 1, **changes: Any) -> Envelope:
    return Envelope(ContractMessage(n=n), **changes)


def receive(transport: BeanstalkTransport, count: int = 1, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(max=count - len(got), timeout=deadline - time.monotonic())
    return got


def job_id(sent: Envelope) -> int:
    assert sent.transport_message_id is not None
    return int(sent.transport_message_id)


# -- putting ---------------------------------------------------------------------


def test_priority_delay_and_ttr_are_always_put_explicitly(janitor: Any) -> None:
    transport = janitor.transport(lease="2.5")
    plain = janitor.job(job_id(transport.send(envelope(1))))
    assert (plain["pri"], plain["delay"], plain["ttr"]) == (1024, 0, 3)
    urgent = janitor.job(job_id(transport.send(envelope(2, priority=9, delay=0.2, ttr=7))))
    assert (urgent["pri"], urgent["delay"], urgent["ttr"]) == (1015, 1, 7)
    assert urgent["state"] == "delayed"
    other_base = janitor.transport(transport.queue, priority_base="100")
    assert janitor.job(job_id(other_base.send(envelope(3, priority=5))))["pri"] == 95


def test_priorities_are_served_most_urgent_first_and_fifo_within_one(janitor: Any) -> None:
    transport = janitor.transport()
    for n, priority in ((1, 0), (2, 9), (3, 0), (4, 9), (5, 5)):
        transport.send(envelope(n, priority=priority))
    got = receive(transport, 5)
    assert [r.envelope.message.n for r in got] == [2, 4, 5, 1, 3]
    transport.ack_many(got)


def test_a_job_too_big_for_the_server_is_refused_before_the_put(janitor: Any) -> None:
    transport = janitor.transport()
    transport.setup()
    server_limit = janitor.client().stats()["max-job-size"]
    assert transport.capabilities.max_message_size == server_limit
    with pytest.raises(MessageTooLarge):
        transport.send(envelope(1, headers={"x": "y" * server_limit}))
    # The body alone fits, the job with courier's packed headers does not.
    with pytest.raises(MessageTooLarge) as caught:
        transport.send(Envelope(ContractMessage(n=2, text="z" * (server_limit - 150))))
    assert caught.value.limit == server_limit
    with pytest.raises(PublishNotConfirmed) as refused:
        transport.send_many([Envelope(ContractMessage(n=3, text="z" * server_limit))])
    assert isinstance(refused.value.__cause__, MessageTooLarge)
    assert janitor.counts(transport.queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_send_many_names_what_failed_and_sends_the_rest(janitor: Any) -> None:
    transport = janitor.transport()
    batch = [envelope(1), Envelope(ContractMessage(n=2, text="z" * 70_000)), envelope(3)]
    with pytest.raises(PublishNotConfirmed, match="1 of 3") as caught:
        transport.send_many(batch)
    assert caught.value.failed_ids == (batch[1].id,)
    got = receive(transport, 2)
    assert [r.envelope.id for r in got] == [batch[0].id, batch[2].id]
    transport.ack_many(got)


# -- reserving -----------------------------------------------------------------


def test_the_first_queue_listed_is_drained_first(janitor: Any) -> None:
    transport = janitor.transport()
    first, second = janitor.name("first"), janitor.name("second")
    for n in range(3):
        transport.send(envelope(10 + n, priority=9), second)  # more urgent, second queue
        transport.send(envelope(n), first)
    got = []
    while len(got) < 6:
        batch = transport.receive([first, second], max=10, timeout=2)
        assert batch
        got += batch
        transport.ack_many(batch)
    assert [r.queue for r in got] == [first] * 3 + [second] * 3
    assert [r.envelope.message.n for r in got] == [0, 1, 2, 10, 11, 12]


def test_a_wait_on_several_queues_takes_the_first_job_of_any(janitor: Any) -> None:
    transport = janitor.transport()
    first, second = janitor.name("first"), janitor.name("second")
    transport.receive([first, second], timeout=0)
    threading.Timer(0.3, lambda: janitor.transport().send(envelope(7), second)).start()
    started = time.monotonic()
    [got] = transport.receive([first, second], max=5, timeout=5)
    assert time.monotonic() - started < 3
    assert got.queue == second
    assert got.envelope.message.n == 7
    transport.ack(got)


def test_receive_waits_no_longer_than_asked(janitor: Any) -> None:
    transport = janitor.transport()
    for timeout in (0.0, 0.3, 1.0, 1.4):
        started = time.monotonic()
        assert transport.receive(timeout=timeout) == []
        waited = time.monotonic() - started
        assert timeout * 0.9 <= waited < timeout + 0.5


def test_a_job_that_is_not_utf8_is_read_as_bytes_and_settled(janitor: Any) -> None:
    transport = janitor.transport()
    janitor.put_raw(transport.queue, b"\xff\xfe\x00garbage")
    [got] = receive(transport)
    assert got.envelope is None
    assert isinstance(got.error, MessageDecodingFailed)
    assert "UTF-8" in str(got.error)
    assert got.raw == b"\xff\xfe\x00garbage"
    transport.ack(got)
    assert transport.receive(timeout=0.3) == []
    assert janitor.counts(transport.queue)["reserved"] == 0


def test_holding_a_job_in_its_last_second_does_not_stop_other_jobs(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(1, ttr=1))
    [held] = receive(transport)
    # beanstalkd answers DEADLINE_SOON to a reserve with nothing ready while
    # this connection holds a job in its last second: receive keeps waiting.
    threading.Timer(0.4, lambda: janitor.transport(transport.queue).send(envelope(2))).start()
    got = transport.receive(max=1, timeout=3)
    assert [r.envelope.message.n for r in got] in ([2], [1])
    transport.ack_many([held, *got])


# -- touch, TTR, release ---------------------------------------------------------


def test_touch_keeps_a_job_past_its_ttr(janitor: Any) -> None:
    holder = janitor.transport(lease="1")
    other = janitor.transport(holder.queue, lease="1")
    holder.send(envelope(1))
    [held] = receive(holder)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        holder.renew(held)
        assert other.receive(timeout=0.25) == []
    holder.ack(held)
    assert janitor.job(held.handle) is None


def test_without_touch_the_ttr_lapses_and_a_late_ack_says_so(
    janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    holder = janitor.transport(lease="1")
    other = janitor.transport(holder.queue)
    holder.send(envelope(1))
    [held] = receive(holder)
    [again] = receive(other, timeout=10)
    assert again.envelope.id == held.envelope.id
    with caplog.at_level(logging.WARNING, logger="courier.beanstalk"):
        holder.ack(held)
        holder.renew(held)  # no longer held: silent
    assert caplog.text.count("TTR ran out") == 1
    other.ack(again)


def test_renewing_what_was_already_acknowledged_is_silent(
    janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    transport = janitor.transport()
    transport.send(envelope(1))
    [got] = receive(transport)
    transport.ack(got)
    with caplog.at_level(logging.DEBUG, logger="courier.beanstalk"):
        transport.renew(got)
    assert caplog.records == []


def test_release_keeps_the_jobs_priority(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(1, priority=7))
    [got] = receive(transport)
    transport.release(got)
    stats = janitor.job(got.handle)
    assert (stats["state"], stats["pri"], stats["releases"]) == ("ready", 1017, 1)
    transport.ack(receive(transport)[0])


# -- delivery counts ---------------------------------------------------------------


def test_delivery_count_comes_from_reserves_and_counts_a_dead_holder(janitor: Any) -> None:
    queue = janitor.name()
    counting = janitor.transport(queue, delivery_count="true")
    counting.send(envelope(1))
    [first] = receive(counting)
    assert first.delivery_count == 1
    counting.close()  # dies holding it: no release, no timeout
    again = janitor.transport(queue, delivery_count="true")
    [second] = receive(again)
    assert second.delivery_count == 2
    stats = janitor.job(second.handle)
    assert (stats["reserves"], stats["releases"], stats["timeouts"]) == (2, 0, 0)
    again.ack(second)


def test_without_the_option_the_count_is_not_read(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(1))
    [got] = receive(transport)
    transport.release(got)
    [got] = receive(transport)
    assert got.delivery_count == 1
    assert not transport.capabilities.delivery_count
    transport.ack(got)


def test_counting_reserves_one_job_at_a_time(janitor: Any) -> None:
    transport = janitor.transport(delivery_count="true")
    transport.send_many([envelope(n) for n in range(5)])
    got = transport.receive(max=5, timeout=2)
    assert len(got) == 1
    assert janitor.counts(transport.queue)["reserved"] == 1
    transport.ack_many(got)


# -- retry, bury, kick ---------------------------------------------------------------


def test_a_retry_puts_the_new_attempt_then_deletes_the_old_job(janitor: Any) -> None:
    transport = janitor.transport()
    sent = transport.send(envelope(1, priority=3, ttr=9, headers={"tenant": "acme"}))
    [got] = receive(transport)
    transport.retry(got, got.envelope.with_(attempt=2, received=None), 1.0)
    assert janitor.job(got.handle) is None
    assert janitor.counts(transport.queue)["delayed"] == 1
    [again] = receive(transport, timeout=4)
    assert again.handle != got.handle
    assert again.envelope.id == sent.id
    assert again.envelope.attempt == 2
    assert dict(again.envelope.headers) == {"tenant": "acme"}
    stats = janitor.job(again.handle)
    assert (stats["pri"], stats["ttr"]) == (1021, 9)
    transport.ack(again)


def test_reject_buries_and_the_buried_tools_list_kick_and_remove(janitor: Any) -> None:
    transport = janitor.transport()
    for n in range(5):
        transport.send(envelope(n))
    janitor.put_raw(transport.queue, b"not json")
    got = receive(transport, 6)
    for item in got:
        transport.reject(item, "the test buries it")
    assert transport.stats()[0].dead == 6
    listing = transport.buried()
    assert listing.total == 6
    assert listing.complete
    assert [job.job_id for job in listing.jobs] == sorted(item.handle for item in got)
    decoded = [job for job in listing.jobs if job.envelope is not None]
    assert sorted(job.envelope.message.n for job in decoded) == list(range(5))  # type: ignore[union-attr]
    [foreign] = [job for job in listing.jobs if job.envelope is None]
    assert foreign.body == b"not json"
    assert "malformed JSON" in (foreign.error or "")
    assert foreign.buries == 1
    two = transport.buried(limit=2)
    assert (two.total, two.complete, len(two.jobs)) == (6, True, 2)
    assert set(two.jobs) <= set(listing.jobs)

    first = listing.jobs[0]
    assert transport.find_buried(first.job_id) == first
    assert transport.kick_job(first.job_id) is True
    assert transport.kick_job(first.job_id) is False  # not buried any more
    [back] = receive(transport)
    assert back.handle == first.job_id
    transport.ack(back)
    assert transport.remove_buried(foreign.job_id) is True
    assert transport.remove_buried(foreign.job_id) is False
    assert transport.buried().total == 4


def test_kick_job_never_wakes_a_delayed_job(janitor: Any) -> None:
    transport = janitor.transport()
    delayed = transport.send(envelope(1, delay=60))
    assert transport.kick_job(job_id(delayed)) is False
    assert janitor.job(job_id(delayed))["state"] == "delayed"
    assert transport.kick_job(10**12) is False
    assert transport.find_buried(job_id(delayed)) is None


def test_the_holds_buried_capability_keys_buried_jobs_by_id(janitor: Any) -> None:
    """What ``courier failed`` uses: text keys, a queue check, nothing for a non-id."""
    transport = janitor.transport()
    assert isinstance(transport, HoldsBuried)
    transport.send(envelope(1))
    delayed = transport.send(envelope(2, delay=60))
    [got] = receive(transport)
    transport.reject(got, "buried for the test")
    key = str(got.handle)

    listing = transport.buried_messages(limit=10)
    assert (listing.queue, listing.total, listing.complete) == (transport.queue, 1, True)
    [message] = listing.messages
    assert (message.key, message.queue, message.deliveries) == (key, transport.queue, 1)
    assert message.envelope is not None
    assert message.envelope.message.n == 1  # type: ignore[attr-defined]
    assert message.reason.startswith("buried by beanstalkd")
    assert abs(message.sent_at - time.time()) < 5
    found = transport.buried_message(key)
    assert found is not None
    assert (found.key, found.body, found.envelope) == (key, message.body, message.envelope)

    other = janitor.name("other")
    assert transport.buried_message(key, other) is None
    assert transport.kick_buried(key, other) is False
    assert transport.delete_buried(key, other) is False
    for junk in ("", "0", "-1", "01", "abc", "1:2", str(2**64)):
        assert transport.buried_message(junk) is None
        assert transport.kick_buried(junk) is False
        assert transport.delete_buried(junk) is False
    assert transport.kick_buried(str(job_id(delayed))) is False
    assert janitor.job(job_id(delayed))["state"] == "delayed"

    assert transport.kick_buried(key, transport.queue) is True
    assert janitor.job(got.handle)["state"] == "ready"
    [again] = receive(transport)
    transport.reject(again, "buried again")
    assert transport.delete_buried(key) is True
    assert janitor.job(got.handle) is None
    assert transport.buried_messages().messages == []


def test_a_short_scan_says_the_listing_is_incomplete(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(1))
    [old] = receive(transport)
    transport.send(envelope(2))
    [new] = receive(transport)
    transport.reject(new, "buried first, so peek-buried shows it")
    transport.reject(old, "buried second, with the lower id")
    filler = janitor.transport()
    filler.send_many([envelope(n) for n in range(20)])
    short = transport.buried(scan_limit=5)
    assert (short.total, short.complete) == (2, False)
    assert [job.job_id for job in short.jobs] == [new.handle]
    full = transport.buried()
    assert full.complete
    assert [job.job_id for job in full.jobs] == [old.handle, new.handle]


# -- stats, setup, subscriptions --------------------------------------------------


def test_stats_come_from_stats_tube(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send_many([envelope(n) for n in range(4)])
    transport.send(envelope(9, delay=60))
    [held] = receive(transport)
    [buried] = receive(transport)
    transport.reject(buried, "for the count")
    [stats] = transport.stats()
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (2, 1, 1, 1)
    [nothing] = transport.stats([janitor.name("never-used")])
    assert (nothing.ready, nothing.in_flight, nothing.delayed, nothing.dead) == (0, 0, 0, 0)
    transport.ack(held)


def test_setup_checks_tube_names(janitor: Any) -> None:
    transport = janitor.transport()
    with pytest.raises(ConfigurationError, match="tube name"):
        transport.setup(["fine", "not fine"])


def test_subscriptions_are_recorded_and_reach_a_producer_that_knows_none(janitor: Any) -> None:
    topic = janitor.name("topic")
    consumer = janitor.transport()
    consumer.setup(topics={topic: ["audit", "mail"]})
    consumer.setup(topics={topic: ["mail", "search"]})
    assert consumer.subscriptions(topic) == ["audit", "mail", "search"]
    producer = janitor.transport()
    assert producer.subscriptions(topic) == ["audit", "mail", "search"]
    event = Envelope(ContractEvent(n=1))
    producer.publish(event, topic, [])
    tubes = consumer.queues()
    assert {f"{topic}.{name}" for name in ("audit", "mail", "search")} <= set(tubes)
    assert not any(tube.startswith("courier-subscriptions.") for tube in tubes)
    for name in ("audit", "mail", "search"):
        got = consumer.receive([f"{topic}.{name}"], timeout=2)
        assert [r.envelope.id for r in got] == [event.id]
        consumer.ack_many(got)


def test_concurrent_setups_merge_their_subscriptions(janitor: Any) -> None:
    topic = janitor.name("topic")
    names = [[f"s{i}a", f"s{i}b"] for i in range(6)]
    errors: list[BaseException] = []

    def setup(subscriptions: list[str]) -> None:
        try:
            janitor.transport().setup(topics={topic: subscriptions})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=setup, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert janitor.transport().subscriptions(topic) == sorted(
        name for pair in names for name in pair
    )


def test_a_foreign_producer_of_courier_jobs_is_understood(janitor: Any) -> None:
    transport = janitor.transport()
    body = b'{"n": 4, "text": "from PHP"}'
    janitor.put_raw(
        transport.queue,
        pack(body, {"courier-type": "courier.contract.message", "courier-id": "php-1"}),
    )
    [got] = receive(transport)
    assert got.envelope.id == "php-1"
    assert got.envelope.message == ContractMessage(n=4, text="from PHP")
    transport.ack(got)


def test_a_raw_client_sees_courier_jobs_as_readable_json(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(3))
    client = janitor.client()
    client.use(transport.queue)
    peeked = client.peek_ready()
    assert b'"courier-type":"courier.contract.message"' in peeked.body
    assert b'"body":"{\\"n\\":3,\\"text\\":\\"hello\\"}"' in peeked.body
    with pytest.raises(greenstalk.NotFoundError):
        client.peek_buried()
