"""A worker's resident memory over a million messages: does it stay flat?

    python benchmarks/bench_memory.py [--messages 1000000] [--every 100000]
        [--transports sqlite,amqp]

For each transport, a producer process keeps a backlog of at most
``--backlog`` messages (``dispatch_many`` by 1,000, watching the queue's
ready count), while a worker in this process (prefetch 100, acknowledgements
by 100, a handler that does nothing) handles ``--messages`` of them. Every
``--every`` messages the worker's RSS is printed. The first interval is the
warm-up (imports, caches, the allocator's arenas); the verdict compares the
RSS at the end of the last interval with the RSS at the end of the first:
flat means within 5%.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import uuid
from typing import Any, ClassVar

from workload import drop_amqp_queue

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions
from courier.worker_options import rss_mib

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
TEXT = "Hello, your parcel left our warehouse today and should arrive soon. Thanks!"


class Parcel(Message):
    message_name: ClassVar[str] = "bench.memory-parcel"

    n: int
    to: str
    body: str


def make_bus(dsn: str) -> Bus:
    bus = Bus(transports={"bench": dsn})
    bus.route(Parcel, "bench")
    return bus


def produce(dsn: str, count: int, backlog: int, stop: Any) -> None:
    """Keep at most ``backlog`` messages waiting until ``count`` were sent."""
    bus = make_bus(dsn)
    transport = bus.transport("bench")
    sent = 0
    while sent < count and not stop.is_set():
        ready = transport.stats()[0].ready or 0
        if ready > backlog:
            time.sleep(0.05)
            continue
        chunk = min(1000, count - sent)
        bus.dispatch_many(
            [
                Parcel(n=n, to=f"customer{n:07d}@example.com", body=TEXT)
                for n in range(sent, sent + chunk)
            ]
        )
        sent += chunk
    bus.close()


def run(label: str, dsn: str, count: int, every: int, backlog: int) -> bool:
    bus = make_bus(dsn)
    bus.transport("bench").setup()
    handled = 0
    curve: list[tuple[int, float]] = []
    started = time.monotonic()

    @bus.handler(Parcel)
    def parcel(message: Parcel) -> None:
        nonlocal handled
        handled += 1
        if handled % every == 0:
            rss = rss_mib()
            curve.append((handled, rss))
            rate = handled / (time.monotonic() - started)
            print(f"  {label}: {handled:>9,} handled  RSS {rss:7.1f} MiB  ({rate:,.0f} msgs/s)")
            sys.stdout.flush()

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    producer = context.Process(target=produce, args=(dsn, count, backlog, stop))
    producer.start()
    try:
        options = WorkerOptions(limit=count, prefetch=100, ack_batch=100)
        Worker(bus, ["bench"], options=options).run()
    finally:
        stop.set()
        producer.join(60)
        bus.close()
    first, last = curve[0][1], curve[-1][1]
    flat = abs(last - first) <= 0.05 * first
    print(
        f"  {label}: after warm-up {first:.1f} MiB, at the end {last:.1f} MiB "
        f"({(last - first) / first:+.1%}): {'flat' if flat else 'NOT flat'}\n"
    )
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--transports", default="sqlite,amqp")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="courier-memory-") as tmp:
        for name in args.transports.split(","):
            if name == "sqlite":
                dsn = f"sqlite:///{tmp}/memory.db?queue=memory"
            else:
                queue = f"bench-memory-{uuid.uuid4().hex[:8]}"
                dsn = f"{args.url.split('?')[0]}?queue={queue}&prefetch=1000"
            print(f"{name}: {args.messages:,} messages, RSS every {args.every:,}")
            results.append((name, run(name, dsn, args.messages, args.every, args.backlog)))
            if name == "amqp":
                cleanup(args.url, dsn)
    for name, flat in results:
        print(f"{name}: {'flat' if flat else 'NOT flat'}")


def cleanup(url: str, dsn: str) -> None:
    drop_amqp_queue(url, make_bus(dsn).transport("bench").queue)


if __name__ == "__main__":
    main()
