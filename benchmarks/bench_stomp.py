"""courier on RabbitMQ's STOMP plugin against raw stomp.py doing the same work with the same safety.

    python benchmarks/bench_stomp.py [--messages 20000] [--runs 3] [--url stomp://...]

Every case moves ``--messages`` JSON messages of about 200 bytes through a
durable queue (courier's default, a classic queue), persistent, with a
receipt on every SEND on both sides, and acknowledges on the consume side
only after the message was handled (decoded). Each case runs in a fresh
process, raw and courier alternating, and the table shows the median of
``--runs`` runs, in messages per second, and courier / raw.

publish, one receipt each
    raw: ``conn.send(..., receipt=...)`` then wait for that RECEIPT, one by
    one. courier: ``bus.dispatch`` one message at a time.
publish, receipts in flight
    raw: every SEND with a receipt, at most 1,000 outstanding, then wait for
    the rest. courier: one ``bus.dispatch_many`` of every message (courier
    keeps up to ``receipt_window`` = 1,000 outstanding). A second row calls
    ``dispatch_many`` per 1,000 messages. This is also raw's fastest
    at-least-once publish (PERFORMANCE.md's 16,059 sends without a receipt
    are not at-least-once).
consume, ack each after handling
    raw: SUBSCRIBE ``ack:client-individual``, ``prefetch-count:100``,
    json.loads in the listener, one ACK per message. courier: a Worker
    (prefetch 100 per receive, acknowledgements flushed by 100, DSN prefetch
    1,000), the full consume stack, decoding into the pydantic model.
consume, raw's fastest at-least-once
    raw: ``ack:client`` (cumulative), ``prefetch-count:1000``, one ACK after
    every 100 handled; courier: the same Worker as above (STOMP's
    ``client-individual`` mode, which courier uses so that one message can
    be released or rejected without the ones before it, has no batch ACK).

The queue for each case is declared by courier and deleted afterwards
through RabbitMQ's AMQP port (``--amqp-url``), which also checks it is empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika  # type: ignore[import-untyped]
import stomp  # type: ignore[import-untyped]
from workload import SendEmail, in_fresh_process, payload

from courier import Bus
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

DEFAULT_URL = "stomp://guest:guest@127.0.0.1:61613/%2f"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
#: Shared with the spawned children through the environment.
TAG = os.environ.setdefault("COURIER_BENCH_TAG", f"bench-{uuid.uuid4().hex[:8]}")
OPTIONS = {"delay_prefix": f"{TAG}.delay"}


def dsn(url: str, queue: str, **options: str) -> str:
    return Dsn.parse(url).with_options(queue=queue, **OPTIONS, **options).render(reveal=True)


def make_bus(url: str, queue: str, **options: str) -> Bus:
    bus = Bus(transports={"bench": dsn(url, queue, **options)})
    bus.route(SendEmail, "bench")
    return bus


# -- raw stomp.py ----------------------------------------------------------------


class Raw(stomp.ConnectionListener):  # type: ignore[misc]
    """A raw stomp.py connection with receipts counted and messages handed to a callback."""

    def __init__(self, url: str, on_message: Callable[[Any], None] | None = None) -> None:
        parsed = Dsn.parse(url)
        self.cond = threading.Condition()
        self.receipts = 0
        self.on_message_cb = on_message
        self.conn = stomp.Connection12(
            [(parsed.host or "127.0.0.1", parsed.port or 61613)],
            vhost=(parsed.path[1:] if parsed.path.startswith("/") else parsed.path) or "/",
            auto_decode=False,
        )
        self.conn.set_listener("bench", self)
        self.conn.connect(parsed.username, parsed.password, wait=True)

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts += 1
            self.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        if self.on_message_cb is not None:
            self.on_message_cb(frame)

    def wait_receipts(self, count: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.receipts >= count, timeout=120)
        if self.receipts < count:
            raise RuntimeError(f"raw: {self.receipts} of {count} receipts")

    def close(self) -> None:
        self.conn.disconnect()


def _headers(n: int) -> dict[str, str]:
    return {
        "persistent": "true",
        "content-type": "application/json",
        "message-id-of-app": uuid.uuid4().hex,
        "receipt": str(n),
    }


def raw_publish_each(url: str, queue: str, count: int) -> float:
    raw = Raw(url)
    destination = f"/queue/{queue}"
    started = time.perf_counter()
    for n in range(count):
        raw.conn.send(destination, json.dumps(payload(n)).encode(), headers=_headers(n))
        raw.wait_receipts(n + 1)
    elapsed = time.perf_counter() - started
    raw.close()
    return count / elapsed


def raw_publish_in_flight(url: str, queue: str, count: int, window: int = 1000) -> float:
    raw = Raw(url)
    destination = f"/queue/{queue}"
    started = time.perf_counter()
    for n in range(count):
        if n - raw.receipts >= window:
            raw.wait_receipts(n - window + 1)
        raw.conn.send(destination, json.dumps(payload(n)).encode(), headers=_headers(n))
    raw.wait_receipts(count)
    elapsed = time.perf_counter() - started
    raw.close()
    return count / elapsed


def raw_consume(url: str, queue: str, count: int, *, cumulative: bool) -> float:
    done = threading.Event()
    handled = 0
    raw: Raw

    def on_message(frame: Any) -> None:
        nonlocal handled
        json.loads(frame.body)  # the handling
        handled += 1
        if not cumulative:
            raw.conn.ack(frame.headers["ack"])
        elif handled % 100 == 0 or handled == count:
            raw.conn.ack(frame.headers["ack"])  # acknowledges every message up to it
        if handled == count:
            done.set()

    raw = Raw(url, on_message)
    started = time.perf_counter()
    raw.conn.subscribe(
        f"/queue/{queue}",
        id="bench",
        ack="client" if cumulative else "client-individual",
        headers={"prefetch-count": "1000" if cumulative else "100"},
    )
    if not done.wait(300):
        raise RuntimeError(f"raw consumer handled {handled} of {count}")
    elapsed = time.perf_counter() - started
    raw.close()
    return count / elapsed


def raw_consume_each(url: str, queue: str, count: int) -> float:
    return raw_consume(url, queue, count, cumulative=False)


def raw_consume_fastest(url: str, queue: str, count: int) -> float:
    return raw_consume(url, queue, count, cumulative=True)


# -- courier -------------------------------------------------------------------


def courier_publish_each(url: str, queue: str, count: int) -> float:
    bus = make_bus(url, queue)
    bus.dispatch(SendEmail(**payload(-1)))  # connected before the clock starts, as raw is
    started = time.perf_counter()
    for n in range(count - 1):
        bus.dispatch(SendEmail(**payload(n)))
    elapsed = time.perf_counter() - started
    bus.close()
    return (count - 1) / elapsed


def courier_publish_all(url: str, queue: str, count: int) -> float:
    return courier_publish_batches(url, queue, count, batch=count)


def courier_publish_batches(url: str, queue: str, count: int, batch: int = 1000) -> float:
    bus = make_bus(url, queue)
    bus.dispatch(SendEmail(**payload(-1)))
    started = time.perf_counter()
    for start in range(0, count - 1, batch):
        bus.dispatch_many(
            [SendEmail(**payload(n)) for n in range(start, min(start + batch, count - 1))]
        )
    elapsed = time.perf_counter() - started
    bus.close()
    return (count - 1) / elapsed


def courier_consume(url: str, queue: str, count: int) -> float:
    bus = make_bus(url, queue, prefetch="1000")
    handled = 0

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    worker = Worker(bus, ["bench"], options=WorkerOptions(limit=count, prefetch=100, ack_batch=100))
    started = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - started
    bus.close()
    assert handled == count
    return count / elapsed


# -- the harness ---------------------------------------------------------------


def fill(url: str, queue: str, count: int) -> None:
    bus = make_bus(url, queue)
    for start in range(0, count, 1000):
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(start, min(start + 1000, count))])
    bus.close()


def measure(
    url: str, amqp_url: str, case: Callable[..., float], count: int, prefill: bool
) -> float:
    """Run ``case`` in a fresh process on a fresh queue; messages per second."""
    queue = f"{TAG}-{uuid.uuid4().hex[:6]}"
    setup = make_bus(url, queue)
    setup.transport("bench").setup()
    setup.close()
    if prefill:
        fill(url, queue, count)
    rate = float(in_fresh_process(case, (url, queue, count), timeout=600))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    left = channel.queue_declare(queue, passive=True).method.message_count
    channel.queue_delete(queue)
    connection.close()
    expected = 0 if prefill else count
    if left != expected:
        raise SystemExit(f"{case.__name__}: {left} messages left in the queue, expected {expected}")
    return rate


CASES: list[tuple[str, Callable[..., float], Callable[..., float], bool]] = [
    ("publish, one receipt each", raw_publish_each, courier_publish_each, False),
    ("publish, 1,000 receipts in flight", raw_publish_in_flight, courier_publish_all, False),
    (
        "  courier: dispatch_many per 1,000 messages",
        raw_publish_in_flight,
        courier_publish_batches,
        False,
    ),
    ("consume, ack each after handling", raw_consume_each, courier_consume, True),
    (
        "consume, raw fastest (ack:client per 100, prefetch 1000)",
        raw_consume_fastest,
        courier_consume,
        True,
    ),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--only", help="run only the cases whose title contains this")
    args = parser.parse_args(argv)
    print(
        f"{args.messages:,} messages of ~{len(json.dumps(payload(0)))} bytes, "
        f"median of {args.runs} run(s), messages/s\n"
    )
    header = f"{'case':<58} {'stomp.py':>10} {'courier':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for title, raw, ours, prefill in CASES:
        if args.only and args.only not in title:
            continue
        raw_rates, our_rates = [], []
        for _ in range(args.runs):
            raw_rates.append(measure(args.url, args.amqp_url, raw, args.messages, prefill))
            our_rates.append(measure(args.url, args.amqp_url, ours, args.messages, prefill))
        raw_rate, our_rate = statistics.median(raw_rates), statistics.median(our_rates)
        print(f"{title:<58} {raw_rate:>10,.0f} {our_rate:>10,.0f} {our_rate / raw_rate:>6.0%}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
