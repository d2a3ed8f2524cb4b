"""Latency from ``bus.dispatch`` to the handler's start, on an idle worker in another process.

    python benchmarks/bench_latency.py [--messages 200] [--interval 0.02] [--transports sqlite,amqp]

For each transport a worker runs in a subprocess (``courier``'s Worker with
its defaults: ``sleep=1``, prefetch 10, batched acks), idle, waiting. This
process dispatches one message every ``--interval`` seconds (20 ms), each
carrying ``time.time()`` of its dispatch; the handler writes
``time.time() - sent_at`` at its start. The table shows the median, p90 and
p99 of those latencies, and the worker's CPU use while idle (its user +
system time over two seconds with nothing to do, from ``/proc``).

SQLite runs twice: ``wake=false`` (polling every ``poll_interval``, 0.1 s,
as before the wake sockets) and the default (a producer's commit wakes the
worker). AMQP needs RabbitMQ (``--url``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

from workload import drop_amqp_queue

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


class Ping(Message):
    message_name: ClassVar[str] = "bench.latency-ping"

    n: int
    sent_at: float


def child(dsn: str, ledger: str, count: int, ready: str) -> None:
    """The worker process: handle ``count`` pings, writing each one's latency."""
    bus = Bus(transports={"bench": dsn})
    bus.route(Ping, "bench")
    out = open(ledger, "w", buffering=1)  # noqa: SIM115 - open for the worker's life

    @bus.handler(Ping)
    def ping(message: Ping) -> None:
        out.write(f"{time.time() - message.sent_at!r}\n")

    bus.transport("bench").setup()
    worker = Worker(bus, ["bench"], options=WorkerOptions(limit=count))
    Path(ready).touch()
    worker.run()
    out.close()
    bus.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(dsn: str, count: int, interval: float) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory(prefix="courier-latency-") as tmp:
        ledger, ready = os.path.join(tmp, "ledger"), os.path.join(tmp, "ready")
        worker = subprocess.Popen(
            [sys.executable, __file__, "--child", dsn, ledger, str(count), ready]
        )
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(ready):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not start ({dsn})")
                time.sleep(0.01)
            time.sleep(1.0)  # settled into its idle wait
            idle_from = cpu_seconds(worker.pid)
            time.sleep(2.0)
            idle_cpu = (cpu_seconds(worker.pid) - idle_from) / 2.0
            bus = Bus(transports={"bench": dsn})
            bus.route(Ping, "bench")
            next_at = time.monotonic()
            for n in range(count):
                next_at += interval
                bus.dispatch(Ping(n=n, sent_at=time.time()))
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            bus.close()
            worker.wait(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        latencies = [float(line) for line in Path(ledger).read_text().split()]
    if len(latencies) != count:
        raise SystemExit(f"{dsn}: {len(latencies)} of {count} handled")
    return latencies, idle_cpu


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--transports", default="sqlite,amqp")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args()
    cases: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="courier-latency-db-") as tmp:
        for name in args.transports.split(","):
            if name == "sqlite":
                cases.append(
                    (
                        "sqlite, polling (wake=false)",
                        f"sqlite:///{tmp}/poll.db?queue=latency&wake=false",
                    )
                )
                cases.append(("sqlite, woken (default)", f"sqlite:///{tmp}/wake.db?queue=latency"))
            elif name == "amqp":
                queue = f"bench-latency-{uuid.uuid4().hex[:8]}"
                cases.append(("amqp", f"{args.url.split('?')[0]}?queue={queue}"))
        print(
            f"{args.messages} messages, one every {args.interval * 1000:g} ms, "
            "dispatch -> handler start, worker idle in another process\n"
        )
        header = f"{'transport':<30} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'idle CPU':>9}"
        print(header)
        print("-" * len(header))
        for label, dsn in cases:
            latencies, idle = measure(dsn, args.messages, args.interval)
            p50, p90, p99 = (percentile(latencies, f) * 1000 for f in (0.5, 0.9, 0.99))
            print(f"{label:<30} {p50:>8.1f} {p90:>8.1f} {p99:>8.1f} {idle:>8.1%}")
            sys.stdout.flush()
            if label == "amqp":
                cleanup(dsn)


def cleanup(dsn: str) -> None:
    """Delete the AMQP queue and its dead-letter queue."""
    bus = Bus(transports={"bench": dsn})
    queue = bus.transport("bench").queue
    bus.close()
    drop_amqp_queue(dsn.split("?")[0], queue)


if __name__ == "__main__":
    main()
