"""Where a message's time goes: courier's consume and dispatch paths, stage by stage.

    python benchmarks/bench_breakdown.py [--messages 20000] [--runs 5] [--amqp URL]

The ratio benchmarks say how far courier is from the raw client; this one
says what the difference is made of. Each line runs one more piece of the
path than the line above it, on the same messages, and prints the cost in
microseconds of wall time per message (the median of ``--runs``) and what
that piece added. A profiler would distort exactly what is measured here
(calls of a microsecond or less), so the pieces are weighed by
subtraction instead.

The "without decoding" lines replace the transport's ``decoded`` (bytes
and headers to a validated envelope) with a bare ``Received``: everything
else (the claim, the delivery record, the acknowledgement) still runs.
That is a diagnostic, never something courier does.

Lines, per transport:

- memory (``memory://?serialize=true``): pydantic alone (``to_json`` and
  ``validate_json``), then ``transport.send`` (serialize plus the queue),
  ``bus.dispatch`` (the envelope and the router); on the way out a receive
  of 100 plus ``ack_many`` without and with decoding, ``bus.consume`` on
  each message (the consume stack and the handler), and a ``Worker``.
- SQLite: courier's own claim and delete statements run with ``sqlite3``,
  the same plus what a typed consumer must do per row (``json.loads`` of
  the headers, ``model_validate_json``, a handler call), then courier's
  receive plus ``ack_many`` without and with decoding, and a ``Worker``.
- AMQP (with ``--amqp``): raw pika's fastest at-least-once consume
  (prefetch 1,000, ``json.loads``, ack multiple per 100), courier's
  receive plus ``ack_many`` without and with decoding, and a ``Worker``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_sqlite
from workload import SendEmail, payload

from courier import Bus, Envelope
from courier.transports.base import Received, Transport
from courier.transports.sqlite_schema import ACK, CLAIM
from courier.worker import Worker, WorkerOptions

BATCH = 100


def undecoded(transport: Transport) -> None:
    """Make ``transport`` hand out deliveries without decoding them (the diagnostic)."""

    def decoded(body: bytes, headers: Any, handle: Any, queue: str, **details: Any) -> Received:
        generation = details.get("generation")
        return Received(
            transport,
            handle,
            queue,
            details.get("delivery_count", 1),
            transport.generation if generation is None else generation,
        )

    transport.decoded = decoded  # type: ignore[method-assign]


def filled_bus(dsn: str, count: int) -> Bus:
    bus = Bus(transports={"bench": dsn})
    bus.route(SendEmail, "bench")
    bus.handler(SendEmail)(lambda message: None)
    bus.transport("bench").setup()
    for start in range(0, count, 1000):
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(start, min(start + 1000, count))])
    return bus


def drain(transport: Transport, count: int, consume: Callable[[Received], object] | None) -> float:
    started = time.perf_counter()
    done = 0
    while done < count:
        batch = transport.receive(max=BATCH, timeout=1.0)
        if consume is not None:
            for received in batch:
                consume(received)
        transport.ack_many(batch)
        done += len(batch)
    return time.perf_counter() - started


def work(bus: Bus, count: int) -> float:
    options = WorkerOptions(limit=count, prefetch=BATCH, ack_batch=BATCH, sleep=0)
    worker = Worker(bus, ["bench"], options=options)
    started = time.perf_counter()
    worker.run()
    return time.perf_counter() - started


# -- memory ---------------------------------------------------------------------


MEMORY = "memory://?serialize=true&history=0"


def dispatch_stages(count: int) -> dict[str, Callable[[], float]]:
    dsn = MEMORY
    messages = [SendEmail(**payload(n)) for n in range(count)]

    def pydantic_alone() -> float:
        started = time.perf_counter()
        for message in messages:
            message.__pydantic_serializer__.to_json(message)
        return time.perf_counter() - started

    def send() -> float:
        bus = Bus(transports={"bench": dsn})
        transport = bus.transport("bench")
        envelopes = [Envelope(message) for message in messages]
        started = time.perf_counter()
        for envelope in envelopes:
            transport.send(envelope)
        return time.perf_counter() - started

    def dispatch() -> float:
        bus = Bus(transports={"bench": dsn})
        bus.route(SendEmail, "bench")
        started = time.perf_counter()
        for message in messages:
            bus.dispatch(message)
        return time.perf_counter() - started

    return {
        "pydantic alone: to_json": pydantic_alone,
        "transport.send (an envelope made before)": send,
        "bus.dispatch (the envelope, the router, send)": dispatch,
    }


def consume_stages(count: int) -> dict[str, Callable[[], float]]:
    dsn = MEMORY
    bodies = [SendEmail(**payload(n)).model_dump_json() for n in range(count)]

    def pydantic_alone() -> float:
        started = time.perf_counter()
        for body in bodies:
            SendEmail.model_validate_json(body)
        return time.perf_counter() - started

    def receive_undecoded() -> float:
        transport = filled_bus(dsn, count).transport("bench")
        undecoded(transport)
        return drain(transport, count, None)

    def receive() -> float:
        return drain(filled_bus(dsn, count).transport("bench"), count, None)

    def consume() -> float:
        bus = filled_bus(dsn, count)
        return drain(bus.transport("bench"), count, bus.consume)

    def worker() -> float:
        return work(filled_bus(dsn, count), count)

    return {
        "= pydantic alone: validate_json (for reference)": pydantic_alone,
        "receive + ack_many, without decoding": receive_undecoded,
        "receive + ack_many": receive,
        "+ bus.consume of each": consume,
        "Worker": worker,
    }


# -- SQLite -----------------------------------------------------------------------


def sqlite_stages(count: int, folder: Path) -> dict[str, Callable[[], float]]:
    files = iter(range(1_000_000))

    def dsn() -> str:
        return f"sqlite://{folder}/bench-{next(files)}.db?queue=bench&wake=false"

    def raw(decode: bool) -> float:
        bus = filled_bus(dsn(), count)
        path = bus.transport("bench").path  # type: ignore[attr-defined]
        bus.close()

        connection = bench_sqlite.raw_connect(path, "normal")  # courier's default synchronous
        classes = {SendEmail.message_name: SendEmail}
        done, token = 0, 0
        started = time.perf_counter()
        while done < count:
            token += 1
            connection.execute("BEGIN IMMEDIATE")
            rows = connection.execute(CLAIM, (token, time.time(), 30.0, "bench", BATCH)).fetchall()
            connection.execute("COMMIT")
            if decode:
                for _, _, _, body, text, _ in rows:
                    headers = json.loads(text)
                    classes[headers["courier-type"]].model_validate_json(body)
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(ACK, [(row[0], token) for row in rows])
            connection.execute("COMMIT")
            done += len(rows)
        elapsed = time.perf_counter() - started
        connection.close()
        return elapsed

    def receive_undecoded() -> float:
        transport = filled_bus(dsn(), count).transport("bench")
        undecoded(transport)
        return drain(transport, count, None)

    def receive() -> float:
        return drain(filled_bus(dsn(), count).transport("bench"), count, None)

    def worker() -> float:
        return work(filled_bus(dsn(), count), count)

    return {
        "courier's claim and delete SQL, run raw": lambda: raw(False),
        "  + json.loads, model_validate_json, a call": lambda: raw(True),
        "receive + ack_many, without decoding": receive_undecoded,
        "receive + ack_many": receive,
        "Worker": worker,
    }


# -- AMQP ---------------------------------------------------------------------------


def amqp_stages(count: int, url: str) -> dict[str, Callable[[], float]]:
    import bench_amqp

    def case(function: Callable[[str, str, int], float]) -> Callable[[], float]:
        def run() -> float:
            return count / bench_amqp.measure(url, function, count, True)

        return run

    return {
        "raw pika, fastest at-least-once": case(bench_amqp.raw_consume_fastest),
        "receive + ack_many, without decoding": case(_amqp_receive_undecoded),
        "receive + ack_many": case(_amqp_receive),
        "Worker": case(bench_amqp.courier_consume),
    }


def _amqp_receive(url: str, queue: str, count: int, decode: bool = True) -> float:
    import bench_amqp

    bus = bench_amqp.make_bus(url, queue, prefetch="1000")
    transport = bus.transport("bench")
    transport.setup()
    if not decode:
        undecoded(transport)
    elapsed = drain(transport, count, None)
    bus.close()
    return count / elapsed


def _amqp_receive_undecoded(url: str, queue: str, count: int) -> float:
    return _amqp_receive(url, queue, count, decode=False)


# -- the table ----------------------------------------------------------------------


def report(title: str, stages: dict[str, Callable[[], float]], count: int, runs: int) -> None:
    """Print each stage's cost and what it added to the line it builds on.

    A line builds on the line above it; a name starting with ``=`` is a
    reference (nothing builds on it) and one indented by two spaces a side
    line (compared with the line above it, but the next line builds on the
    one before it).
    """
    print(f"\n{title}: µs per message, median of {runs} runs")
    print(f"{'stage':<48}{'µs':>8}{'added':>8}")
    base: float | None = None
    for name, stage in stages.items():
        micros = statistics.median(stage() for _ in range(runs)) / count * 1e6
        added = "" if base is None or name.startswith("=") else f"{micros - base:+8.2f}"
        label = name.removeprefix("= ")
        print(f"{label:<48}{micros:>8.2f}{added:>8}")
        sys.stdout.flush()
        if not name.startswith(("=", "  ")):
            base = micros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--amqp", metavar="URL", help="also RabbitMQ, at this URL")
    args = parser.parse_args()
    count, runs = args.messages, args.runs
    report("memory://?serialize=true, dispatch", dispatch_stages(count), count, runs)
    report("memory://?serialize=true, consume", consume_stages(count), count, runs)
    with tempfile.TemporaryDirectory(prefix="courier-breakdown-") as folder:
        report("sqlite://", sqlite_stages(count, Path(folder)), count, runs)
    if args.amqp:
        report("amqp://", amqp_stages(count, args.amqp), count, runs)
        import bench_amqp

        bench_amqp.cleanup(args.amqp)


if __name__ == "__main__":
    main()
