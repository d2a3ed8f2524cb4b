"""courier on Redis Streams against raw redis-py doing the same work with the same safety.

    python benchmarks/bench_redis.py [--messages 20000] [--runs 3] [--url redis://...]

Every case moves ``--messages`` JSON messages of about 200 bytes through a
stream; a send returns once Redis has the entry (its reply), and the
consume side acknowledges only after the message was handled (decoded).
Each case runs in a fresh process (one process each side), raw and courier
alternating; the table shows the median of ``--runs`` runs, in messages per
second, and courier / raw (the median of each run's own ratio, which a busy
machine disturbs less than the ratio of the medians).

dispatch, one at a time
    raw: one XADD per message, waiting for each reply. courier: ``bus.dispatch``.
dispatch_many, pipelined
    raw: XADD pipelined by 100. courier: ``bus.dispatch_many`` of 100 messages.
consume
    raw: XREADGROUP COUNT 100, ``json.loads`` each, one XACK per batch (the
    fastest at-least-once pattern in PERFORMANCE.md). courier: a ``Worker``
    with ``courier consume``'s defaults (prefetch 10, acknowledgements
    batched by 50), the full consume stack, decoding into the pydantic
    model, XACK + XDEL per batch. A second row runs the Worker with
    ``prefetch=100, ack_batch=100``: the worker flushes its acknowledgements
    before every receive, so its prefetch sets how often.
consume, dramatiq
    dramatiq's RedisBroker (lists) with a tuned prefetch of 256, on the same
    Redis, in the same run: the peer courier should beat five times over.

Keys live under a prefix of this run's own and are deleted afterwards.
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

import redis
from workload import SendEmail, in_fresh_process, payload

from courier import Bus
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions
from courier_redis.keys import queue_keys

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Shared with the spawned children through the environment.
TAG = os.environ.setdefault("COURIER_BENCH_TAG", f"bench-{uuid.uuid4().hex[:8]}")
PREFIX = f"{TAG}:"
GROUP = "courier"


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def stream(queue: str) -> str:
    return queue_keys(PREFIX, queue).stream


def dsn(url: str, queue: str) -> str:
    return Dsn.parse(url).with_options(queue=queue, prefix=PREFIX).render(reveal=True)


def make_bus(url: str, queue: str) -> Bus:
    bus = Bus(transports={"bench": dsn(url, queue)})
    bus.route(SendEmail, "bench")
    return bus


# -- publishing ----------------------------------------------------------------


def raw_dispatch_each(url: str, queue: str, count: int) -> float:
    r = client(url)
    key = stream(queue)
    started = time.perf_counter()
    for n in range(count):
        r.xadd(key, {"body": json.dumps(payload(n)), "id": uuid.uuid4().hex})
    elapsed = time.perf_counter() - started
    r.close()
    return count / elapsed


def courier_dispatch_each(url: str, queue: str, count: int) -> float:
    bus = make_bus(url, queue)
    bus.transport("bench").setup()
    started = time.perf_counter()
    for n in range(count):
        bus.dispatch(SendEmail(**payload(n)))
    elapsed = time.perf_counter() - started
    bus.close()
    return count / elapsed


def raw_dispatch_pipelined(url: str, queue: str, count: int, batch: int = 100) -> float:
    r = client(url)
    key = stream(queue)
    started = time.perf_counter()
    for start in range(0, count, batch):
        pipe = r.pipeline(transaction=False)
        for n in range(start, min(start + batch, count)):
            pipe.xadd(key, {"body": json.dumps(payload(n)), "id": uuid.uuid4().hex})
        pipe.execute()
    elapsed = time.perf_counter() - started
    r.close()
    return count / elapsed


def courier_dispatch_many(url: str, queue: str, count: int, batch: int = 100) -> float:
    bus = make_bus(url, queue)
    bus.transport("bench").setup()
    started = time.perf_counter()
    for start in range(0, count, batch):
        bus.dispatch_many(
            [SendEmail(**payload(n)) for n in range(start, min(start + batch, count))]
        )
    elapsed = time.perf_counter() - started
    bus.close()
    return count / elapsed


# -- consuming -----------------------------------------------------------------


def raw_consume(url: str, queue: str, count: int) -> float:
    r = client(url)
    key = stream(queue)
    handled = 0
    started = time.perf_counter()
    while handled < count:
        reply = r.xreadgroup(GROUP, "raw", {key: ">"}, count=100, block=1000)
        for _, entries in reply:
            ids = []
            for entry_id, fields in entries:
                json.loads(fields[b"body"])  # the handling
                ids.append(entry_id)
            r.xack(key, GROUP, *ids)
            handled += len(ids)
    elapsed = time.perf_counter() - started
    r.close()
    return count / elapsed


def courier_consume(url: str, queue: str, count: int, **options: int) -> float:
    bus = make_bus(url, queue)
    handled = 0

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    bus.transport("bench").setup()  # connected before the clock starts, as raw is
    worker = Worker(bus, ["bench"], options=WorkerOptions(limit=count, **options))
    started = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - started
    bus.close()
    assert handled == count
    return count / elapsed


def courier_consume_tuned(url: str, queue: str, count: int) -> float:
    return courier_consume(url, queue, count, prefetch=100, ack_batch=100)


def dramatiq_consume(url: str, queue: str, count: int) -> float:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url, namespace=f"{TAG}-dramatiq")
    dramatiq.set_broker(broker)
    done = threading.Event()
    handled = 0
    lock = threading.Lock()

    @dramatiq.actor(queue_name=queue, broker=broker, max_retries=0)
    def send_email(**message: Any) -> None:
        nonlocal handled
        with lock:
            handled += 1
            if handled >= count:
                done.set()

    for n in range(count):  # dramatiq's own enqueue (a Lua script each), before the clock
        broker.enqueue(send_email.message_with_options(kwargs=payload(n)))
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.queue_prefetch = 256
    started = time.perf_counter()
    worker.start()
    done.wait(timeout=600)
    elapsed = time.perf_counter() - started
    worker.stop()
    broker.close()
    return count / elapsed


# -- the harness ---------------------------------------------------------------


def fill(url: str, queue: str, count: int) -> None:
    bus = make_bus(url, queue)
    for start in range(0, count, 1000):
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(start, min(start + 1000, count))])
    bus.close()


def measure(url: str, case: Callable[..., float], count: int, prefill: bool) -> float:
    """Run ``case`` in a fresh process on a fresh queue; messages per second."""
    queue = f"q{uuid.uuid4().hex[:6]}"
    setup = make_bus(url, queue)
    setup.transport("bench").setup()
    setup.close()
    if prefill:
        fill(url, queue, count)
    rate = float(in_fresh_process(case, (url, queue, count), timeout=900))
    r = client(url)
    left = r.xlen(stream(queue))
    pending = r.xpending(stream(queue), GROUP)["pending"]
    r.delete(stream(queue))
    r.close()
    if prefill and case is not dramatiq_consume:
        expected = count if case is raw_consume else 0  # raw acknowledges, never deletes
        if left != expected or pending:
            raise SystemExit(f"{case.__name__}: {left} entries ({pending} pending) left")
    elif not prefill and left != count:
        raise SystemExit(f"{case.__name__}: {left} entries on the stream, expected {count}")
    return rate


CASES: list[tuple[str, Callable[..., float], Callable[..., float], bool]] = [
    ("dispatch, one at a time (XADD each)", raw_dispatch_each, courier_dispatch_each, False),
    (
        "dispatch_many by 100 (XADD pipelined by 100)",
        raw_dispatch_pipelined,
        courier_dispatch_many,
        False,
    ),
    ("consume (XREADGROUP COUNT 100, XACK per batch)", raw_consume, courier_consume, True),
    ("  courier: Worker prefetch 100, ack_batch 100", raw_consume, courier_consume_tuned, True),
]


def cleanup(url: str) -> None:
    r = client(url)
    for pattern in (f"{PREFIX}*", f"{TAG}-dramatiq*"):
        for key in r.scan_iter(match=pattern, count=1000):
            r.delete(key)
    r.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args(argv)
    print(
        f"{args.messages:,} messages of ~{len(json.dumps(payload(0)))} bytes, "
        f"median of {args.runs} run(s), messages/s\n"
    )
    header = f"{'case':<50} {'raw':>9} {'courier':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    consume = 0.0
    try:
        for title, raw, ours, prefill in CASES:
            raw_rates, our_rates, ratios = [], [], []
            for _ in range(args.runs):
                raw_rates.append(measure(args.url, raw, args.messages, prefill))
                our_rates.append(measure(args.url, ours, args.messages, prefill))
                ratios.append(our_rates[-1] / raw_rates[-1])
            raw_rate, our_rate = statistics.median(raw_rates), statistics.median(our_rates)
            if ours is courier_consume:
                consume = our_rate
            ratio = statistics.median(ratios)
            print(f"{title:<50} {raw_rate:>9,.0f} {our_rate:>9,.0f} {ratio:>6.0%}")
            sys.stdout.flush()
        rates = [measure(args.url, dramatiq_consume, args.messages, True) for _ in range(args.runs)]
        peer = statistics.median(rates)
        title = "consume, dramatiq RedisBroker (prefetch 256)"
        print(f"{title:<50} {peer:>9,.0f} {consume:>9,.0f} {consume / peer:>6.1f}x")
    finally:
        cleanup(args.url)


if __name__ == "__main__":
    main()
