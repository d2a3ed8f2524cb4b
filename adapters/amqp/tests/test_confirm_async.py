"""``confirm=async``: a send returns once written; a failed confirm is raised later, never lost.

Against the real RabbitMQ: nacks are provoked with a queue that refuses
publishes past three messages (``x-max-length`` + ``x-overflow=reject-publish``),
returns by publishing to a queue that does not exist (``mandatory``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from courier import Bus
from courier.envelope import Envelope
from courier.errors import PublishNotConfirmed
from courier.testing.contract import ContractMessage
from courier_amqp import AmqpTransport


def envelope(n: int = 1) -> Envelope:
    return Envelope(ContractMessage(n=n))


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def bounded_queue(janitor: Any) -> str:
    """A queue that nacks every publish past its third message."""
    queue = janitor.name()
    janitor.queues.add(queue)
    janitor.channel().queue_declare(
        queue, durable=True, arguments={"x-max-length": 3, "x-overflow": "reject-publish"}
    )
    return queue


def settled(transport: AmqpTransport) -> bool:
    return not transport._unconfirmed


def test_the_default_still_waits_for_each_confirm(janitor: Any) -> None:
    transport = janitor.transport(auto_setup="false")  # nothing declared: unroutable
    assert transport.options.confirm == "each"
    with pytest.raises(PublishNotConfirmed, match="unroutable"):
        transport.send(envelope(1))


def test_nothing_is_lost_in_the_happy_path(janitor: Any) -> None:
    transport = janitor.transport(confirm="async", confirm_window="50")
    transport.setup()
    sent = [transport.send(envelope(n)) for n in range(500)]
    transport.flush()
    assert janitor.count(transport.queue) == 500
    ids = set()
    while (got := janitor.get_raw(transport.queue)) is not None:
        ids.add(got[1].message_id)
    assert ids == {e.id for e in sent}


def test_a_nack_is_raised_by_the_next_send_naming_the_nacked_message(janitor: Any) -> None:
    queue = bounded_queue(janitor)
    transport = janitor.transport(queue, auto_setup="false", confirm="async")
    sent = [transport.send(envelope(n)) for n in range(4)]  # the fourth is nacked
    eventually(lambda: settled(transport))
    with pytest.raises(PublishNotConfirmed, match="nacked") as caught:
        transport.send(envelope(9))
    assert caught.value.failed_ids == (sent[3].id,)
    assert "this call sent nothing" in str(caught.value)
    assert janitor.count(queue) == 3
    transport.flush()  # raised once: nothing left to report


def test_a_nack_is_raised_by_flush(janitor: Any) -> None:
    queue = bounded_queue(janitor)
    transport = janitor.transport(queue, auto_setup="false", confirm="async")
    sent = [transport.send(envelope(n)) for n in range(5)]
    with pytest.raises(PublishNotConfirmed, match="nacked") as caught:
        transport.flush()
    assert set(caught.value.failed_ids) == {sent[3].id, sent[4].id}


def test_a_return_is_raised_by_close(janitor: Any) -> None:
    transport = janitor.transport(auto_setup="false", confirm="async")
    lost = transport.send(envelope(1))  # no such queue: returned as unroutable
    with pytest.raises(PublishNotConfirmed, match="unroutable") as caught:
        transport.close()
    assert caught.value.failed_ids == (lost.id,)


def test_a_return_is_raised_by_the_next_dispatch_and_by_bus_flush(janitor: Any) -> None:
    queue = janitor.name()  # never declared
    bus = Bus(transports={"jobs": janitor.dsn(queue, auto_setup="false", confirm="async")})
    bus.route(ContractMessage, "jobs")
    try:
        first = bus.dispatch(ContractMessage(n=1))
        transport = bus.transport("jobs")
        assert isinstance(transport, AmqpTransport)
        eventually(lambda: settled(transport))
        with pytest.raises(PublishNotConfirmed, match="unroutable") as caught:
            bus.dispatch(ContractMessage(n=2))
        assert caught.value.failed_ids == (first.id,)
        second = bus.dispatch(ContractMessage(n=3))
        with pytest.raises(PublishNotConfirmed, match="unroutable") as flushed:
            bus.flush()
        assert flushed.value.failed_ids == (second.id,)
        bus.flush()
    finally:
        bus.close()


def test_bus_dispatch_one_at_a_time_then_flush_delivers_everything(janitor: Any) -> None:
    queue = janitor.name()
    bus = Bus(transports={"jobs": janitor.dsn(queue, confirm="async")})
    bus.route(ContractMessage, "jobs")
    transport = bus.transport("jobs")
    assert isinstance(transport, AmqpTransport)
    try:
        transport.setup()
        for n in range(300):
            bus.dispatch(ContractMessage(n=n))
        bus.flush()
        assert janitor.count(queue) == 300
    finally:
        bus.close()
        janitor.queues.update(transport.declared()["queues"])
        janitor.exchanges.update(transport.declared()["exchanges"])
