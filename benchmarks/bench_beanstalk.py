"""courier on beanstalkd against raw greenstalk doing the same work with the same safety.

    python benchmarks/bench_beanstalk.py [--messages 20000] [--runs 3] [--url beanstalk://...]

Every case moves ``--messages`` JSON messages of about 200 bytes through a
fresh tube. Both sides put each job with an explicit priority, delay and
TTR and wait for beanstalkd's INSERTED; on the consume side both reserve a
job, handle it (decode the JSON) and only then delete it. Each case runs
in a fresh process, raw and courier alternating, and the table shows the
median of ``--runs`` runs, in messages per second, and courier / raw, with
the client process's CPU time per message (``time.process_time``): on a
busy machine the rates move with the load, the CPU time much less.

publish
    raw: ``put`` one job after another. courier: ``bus.dispatch`` one
    message at a time; then one ``bus.dispatch_many`` of every message.
    beanstalkd has no batch put and greenstalk no pipelining, so one put
    after another is also raw's fastest at-least-once pattern
    (../shared/PERFORMANCE.md: "put 25,747 ... same").
consume
    raw: ``reserve-with-timeout``, ``json.loads``, ``delete``, one job at a
    time (its fastest at-least-once pattern too: beanstalkd deletes one job
    per command). courier: a Worker (prefetch 100, deletes sent after every
    100 handled), the full consume stack, decoding into the pydantic model.
consume, counting deliveries
    the same with one ``stats-job`` per job, for its ``reserves``: raw does
    it by hand, courier with the DSN option ``delivery_count=true`` (which
    also reserves one job at a time, see docs/transports/beanstalk.md). A
    last row sets that against raw without the count: what the poison
    guard costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import greenstalk
from workload import SendEmail, in_fresh_process, payload

from courier import Bus
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

DEFAULT_URL = "beanstalk://127.0.0.1:11300"
TTR = 60
PRIORITY = 1024


def address(url: str) -> tuple[str, int]:
    dsn = Dsn.parse(url)
    return dsn.host or "127.0.0.1", dsn.port or 11300


def client(url: str, tube: str) -> greenstalk.Client[bytes]:
    return greenstalk.Client(address(url), encoding=None, use=tube, watch=tube)


class Clock:
    """Wall time and this process's CPU time over the measured section."""

    def __enter__(self) -> Clock:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def result(self, count: int) -> tuple[float, float]:
        """(messages per second, client CPU microseconds per message)."""
        return count / self.wall, self.cpu / count * 1e6


def make_bus(url: str, tube: str, **options: str) -> Bus:
    dsn = Dsn.parse(url).with_options(queue=tube, lease=str(TTR), **options)
    bus = Bus(transports={"bench": dsn.render(reveal=True)})
    bus.route(SendEmail, "bench")
    return bus


# -- publishing ----------------------------------------------------------------


def raw_publish(url: str, tube: str, count: int) -> tuple[float, float]:
    raw = client(url, tube)
    with Clock() as clock:
        for n in range(count):
            raw.put(json.dumps(payload(n)).encode(), priority=PRIORITY, delay=0, ttr=TTR)
    raw.close()
    return clock.result(count)


def courier_publish_each(url: str, tube: str, count: int) -> tuple[float, float]:
    bus = make_bus(url, tube)
    bus.transport("bench").setup()  # connected before the clock starts, as raw is
    with Clock() as clock:
        for n in range(count):
            bus.dispatch(SendEmail(**payload(n)))
    bus.close()
    return clock.result(count)


def courier_publish_many(url: str, tube: str, count: int) -> tuple[float, float]:
    bus = make_bus(url, tube)
    bus.transport("bench").setup()
    with Clock() as clock:
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(count)])
    bus.close()
    return clock.result(count)


# -- consuming -----------------------------------------------------------------


def raw_consume(url: str, tube: str, count: int, *, stats: bool = False) -> tuple[float, float]:
    raw = client(url, tube)
    with Clock() as clock:
        for _ in range(count):
            job = raw.reserve(timeout=1)
            if stats:
                raw.stats_job(job)["reserves"]
            json.loads(job.body)  # the handling
            raw.delete(job)
    raw.close()
    return clock.result(count)


def raw_consume_counting(url: str, tube: str, count: int) -> tuple[float, float]:
    return raw_consume(url, tube, count, stats=True)


def courier_consume(url: str, tube: str, count: int, **options: str) -> tuple[float, float]:
    bus = make_bus(url, tube, **options)
    handled = 0

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    bus.transport("bench").setup()
    worker = Worker(bus, ["bench"], options=WorkerOptions(limit=count, prefetch=100, ack_batch=100))
    with Clock() as clock:
        worker.run()
    bus.close()
    assert handled == count
    return clock.result(count)


def courier_consume_counting(url: str, tube: str, count: int) -> tuple[float, float]:
    return courier_consume(url, tube, count, delivery_count="true")


# -- the harness ---------------------------------------------------------------


def fill(url: str, tube: str, count: int) -> None:
    bus = make_bus(url, tube)
    for start in range(0, count, 1000):
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(start, min(start + 1000, count))])
    bus.close()


def measure(
    url: str, case: Callable[..., tuple[float, float]], count: int, prefill: bool
) -> tuple[float, float]:
    """Run ``case`` in a fresh process on a fresh tube: (messages/s, CPU us per message)."""
    tube = f"bench-{uuid.uuid4().hex[:8]}"
    if prefill:
        if case in (raw_consume, raw_consume_counting):
            raw = client(url, tube)
            for n in range(count):
                raw.put(json.dumps(payload(n)).encode(), priority=PRIORITY, delay=0, ttr=TTR)
            raw.close()
        else:
            fill(url, tube, count)
    rate, cpu = in_fresh_process(case, (url, tube, count), timeout=600)
    raw = client(url, tube)
    left = 0
    try:
        stats = raw.stats_tube(tube)
        left = stats["current-jobs-ready"] + stats["current-jobs-reserved"]
    except greenstalk.NotFoundError:
        pass
    expected = 0 if prefill else count
    while True:  # empty the tube
        try:
            raw.delete(raw.reserve(timeout=0))
        except greenstalk.TimedOutError:
            break
    raw.close()
    if left != expected:
        raise SystemExit(f"{case.__name__}: {left} jobs left in the tube, expected {expected}")
    return float(rate), float(cpu)


Case = Callable[..., tuple[float, float]]

CASES: list[tuple[str, Case, Case, bool]] = [
    ("publish, one at a time (put / dispatch)", raw_publish, courier_publish_each, False),
    ("publish, courier dispatch_many of all", raw_publish, courier_publish_many, False),
    ("consume, reserve + handle + delete", raw_consume, courier_consume, True),
    (
        "consume, counting deliveries (+ stats-job)",
        raw_consume_counting,
        courier_consume_counting,
        True,
    ),
    ("  courier counting vs raw without", raw_consume, courier_consume_counting, True),
]


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
    header = (
        f"{'case':<44} {'greenstalk':>10} {'courier':>9} {'ratio':>6}"
        f"   {'CPU us/msg: raw':>15} {'courier':>8}"
    )
    print(header)
    print("-" * len(header))
    for title, raw, ours, prefill in CASES:
        raw_runs, our_runs = [], []
        for _ in range(args.runs):
            raw_runs.append(measure(args.url, raw, args.messages, prefill))
            our_runs.append(measure(args.url, ours, args.messages, prefill))
        raw_rate = statistics.median(rate for rate, _ in raw_runs)
        our_rate = statistics.median(rate for rate, _ in our_runs)
        raw_cpu = statistics.median(cpu for _, cpu in raw_runs)
        our_cpu = statistics.median(cpu for _, cpu in our_runs)
        print(
            f"{title:<44} {raw_rate:>10,.0f} {our_rate:>9,.0f} {our_rate / raw_rate:>6.0%}"
            f"   {raw_cpu:>15.0f} {our_cpu:>8.0f}"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
