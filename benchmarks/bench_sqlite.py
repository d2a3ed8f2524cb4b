"""courier's ``sqlite://`` transport beside the raw sqlite3 module, in one run.

    python benchmarks/bench_sqlite.py [--messages 20000] [--runs 3] [--batch 100]

Three phases, each on a fresh database file, one process:

publish, single
    one message per transaction (``transport.send`` / one autocommit INSERT).
publish, batched
    ``--batch`` messages per transaction (``send_many`` / ``executemany``).
consume + ack
    claim ``--batch`` rows in one ``UPDATE ... RETURNING``, then delete them
    in one transaction (``receive(max=batch)`` + ``ack_many`` / the same SQL).

The raw side has the same safety and the same table: WAL, the same
``synchronous`` setting, the same indexes (courier's DDL, so the index cost
is counted on both sides), claims as ``UPDATE ... RETURNING`` inside
``BEGIN IMMEDIATE``, batched deletes. It does the least a correct queue
must: its bodies are bytes made beforehand and it decodes nothing, while
courier serializes every envelope on the way in and validates every message
into its pydantic class on the way out. The ratio is courier / raw; 1.0 would
mean courier costs nothing on top of SQLite.

A fourth line, ``worker``, consumes through the full stack (Bus, Worker,
consume middleware, a no-op handler, batched acks) for orientation.

Then the same two courier figures against a raw consumer that also does
what any typed consumer must do with each row (``+ decode``): parse the
headers column with ``json.loads``, find the class its type names,
``model_validate_json`` the body into it and call a handler. The gap
between the plain and the ``+ decode`` ratios is the price of the message
contract (a validated pydantic object per message) that raw SQL skips;
what is left is courier's own machinery (envelope, delivery record, poison
guard, retries, batched acknowledgements).

A fifth, ``huey``, is the peer: huey's ``SqliteHuey`` (when huey is
installed: the ``bench`` dependency group) running the same messages as
tasks the way its worker does (``dequeue`` then ``execute``, one task per
transaction), against the same courier ``worker`` figure. huey deletes a
task when it dequeues it (at most once: a crash mid-task loses it), so it
does less than courier's claim, handle, then acknowledge.

Each figure is the median of ``--runs`` runs, with raw and courier
interleaved so machine noise hits both; the ratio is the median of the
runs' own ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from courier import Bus, Message
from courier.envelope import Envelope
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.transports.sqlite import SqliteTransport
from courier.transports.sqlite_schema import SCHEMA
from courier.worker import Worker, WorkerOptions


class BenchEmail(Message):
    message_name: ClassVar[str] = "bench.email"

    to: str
    subject: str
    body: str


def make_messages(count: int) -> list[BenchEmail]:
    # ~200 bytes of JSON each, as in PERFORMANCE.md.
    text = "Hello, this is a benchmark message body. " * 3
    return [
        BenchEmail(to=f"user{n}@example.com", subject=f"Welcome number {n}", body=text)
        for n in range(count)
    ]


# -- raw sqlite3 ------------------------------------------------------------

INSERT = (
    "INSERT INTO courier_messages (queue, message_id, body, headers, priority, state,"
    " available_at, ord) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)"
)
CLAIM = (
    "UPDATE courier_messages SET state = 2, token = ?, deliveries = deliveries + 1,"
    " available_at = ? WHERE id IN (SELECT id FROM courier_messages"
    " WHERE queue = ? AND state = 0 ORDER BY priority DESC, ord, id LIMIT ?)"
    " RETURNING id, body, headers"
)
DELETE = "DELETE FROM courier_messages WHERE id = ? AND token = ?"


def raw_connect(path: Path, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    for statement in SCHEMA:
        connection.execute(statement)
    return connection


def raw_rows(messages: list[BenchEmail]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for message in messages:
        # The same bytes courier writes: the body and its four headers.
        envelope = Envelope(message)
        body = message.__pydantic_serializer__.to_json(message)
        headers = (
            '{"content-type":"application/json","courier-type":"bench.email",'
            f'"courier-id":"{envelope.id}","courier-created":"{envelope.timestamp!r}"}}'
        )
        rows.append(("bench", envelope.id, body, headers, 0, 0, time.time()))
    return rows


def raw_publish_single(path: Path, rows: list[tuple[object, ...]], sync: str) -> float:
    connection = raw_connect(path, sync)
    started = time.perf_counter()
    for row in rows:
        connection.execute(INSERT, row)
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def raw_publish_batched(path: Path, rows: list[tuple[object, ...]], sync: str, batch: int) -> float:
    connection = raw_connect(path, sync)
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(INSERT, rows[start : start + batch])
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def raw_consume(path: Path, count: int, sync: str, batch: int, *, decode: bool = False) -> float:
    """Claim and delete in batches; with ``decode``, also what a typed consumer must do per row.

    That is: parse the headers, find the class the type header names,
    validate the body into it and call the handler, all with the public
    API of ``json`` and pydantic. No envelope, no retries, no dead letters.
    """
    connection = raw_connect(path, sync)
    classes: dict[str, type[Message]] = {BenchEmail.message_name: BenchEmail}
    handled = 0

    def handle(message: Message) -> None:
        nonlocal handled
        handled += 1

    done = 0
    token = 1
    started = time.perf_counter()
    while done < count:
        token += 1
        connection.execute("BEGIN IMMEDIATE")
        rows = connection.execute(CLAIM, (token, time.time() + 30, "bench", batch)).fetchall()
        connection.execute("COMMIT")
        if decode:
            for _, body, text in rows:
                headers = json.loads(text)
                handle(classes[headers["courier-type"]].model_validate_json(body))
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(DELETE, [(row[0], token) for row in rows])
        connection.execute("COMMIT")
        done += len(rows)
    elapsed = time.perf_counter() - started
    connection.close()
    assert handled == (count if decode else 0)
    return elapsed


# -- courier ------------------------------------------------------------------


def serializer() -> JsonSerializer:
    registry = MessageRegistry()
    registry.register(BenchEmail)
    return JsonSerializer(registry)


def transport(path: Path, sync: str) -> SqliteTransport:
    result = SqliteTransport(
        path, name="bench", queue="bench", serializer=serializer(), synchronous=sync
    )
    result.setup()
    return result


def courier_publish_single(path: Path, envelopes: list[Envelope], sync: str) -> float:
    sender = transport(path, sync)
    send = sender.send
    started = time.perf_counter()
    for envelope in envelopes:
        send(envelope)
    elapsed = time.perf_counter() - started
    sender.close()
    return elapsed


def courier_publish_batched(path: Path, envelopes: list[Envelope], sync: str, batch: int) -> float:
    sender = transport(path, sync)
    started = time.perf_counter()
    for start in range(0, len(envelopes), batch):
        sender.send_many(envelopes[start : start + batch])
    elapsed = time.perf_counter() - started
    sender.close()
    return elapsed


def courier_consume(path: Path, count: int, sync: str, batch: int) -> float:
    consumer = transport(path, sync)
    done = 0
    started = time.perf_counter()
    while done < count:
        received = consumer.receive(max=batch)
        consumer.ack_many(received)
        done += len(received)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def courier_worker(path: Path, count: int, sync: str, batch: int) -> float:
    bus = Bus(transports={"bench": transport(path, sync)})
    bus.route(BenchEmail, "bench")
    handled = 0

    @bus.handler(BenchEmail)
    def handle(message: BenchEmail) -> None:
        nonlocal handled
        handled += 1

    options = WorkerOptions(stop_when_empty=True, prefetch=batch, ack_batch=batch, sleep=0)
    worker = Worker(bus, ["bench"], options=options)
    started = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - started
    bus.transport("bench").close()
    assert handled == count, f"the worker handled {handled} of {count}"
    return elapsed


def huey_worker(path: Path, messages: list[BenchEmail]) -> float:
    """huey's SQLite queue: tasks enqueued before the clock, then its worker's loop."""
    from huey import SqliteHuey

    huey = SqliteHuey(filename=str(path), results=False, utc=True)
    handled = 0

    @huey.task()
    def handle(to: str, subject: str, body: str) -> None:
        nonlocal handled
        handled += 1

    for message in messages:
        handle(message.to, message.subject, message.body)
    started = time.perf_counter()
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    elapsed = time.perf_counter() - started
    assert handled == len(messages), f"huey handled {handled} of {len(messages)}"
    return elapsed


def huey_installed() -> bool:
    try:
        import huey  # noqa: F401
    except ImportError:
        return False
    return True


# -- the run ------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, tuple[list[float], list[float]]]:
    count, batch, sync = args.messages, args.batch, args.synchronous
    messages = make_messages(count)
    phases = (
        "publish, single",
        "publish, batched",
        "consume + ack",
        "worker",
        "consume + decode",
        "worker + decode",
    )
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in phases}

    def record(name: str, side: int, seconds: float) -> None:
        results[name][side].append(count / seconds)

    with tempfile.TemporaryDirectory(prefix="courier-bench-") as tmp:
        for run in range(args.runs):
            base = Path(tmp) / f"run{run}"
            base.mkdir()
            rows = raw_rows(messages)
            envelopes = [Envelope(message) for message in messages]
            record("publish, single", 0, raw_publish_single(base / "raw1.db", rows, sync))
            record("publish, single", 1, courier_publish_single(base / "c1.db", envelopes, sync))
            record("publish, batched", 0, raw_publish_batched(base / "raw2.db", rows, sync, batch))
            record(
                "publish, batched",
                1,
                courier_publish_batched(base / "c2.db", envelopes, sync, batch),
            )
            record("consume + ack", 0, raw_consume(base / "raw2.db", count, sync, batch))
            record("consume + ack", 1, courier_consume(base / "c2.db", count, sync, batch))
            courier_publish_batched(base / "c3.db", envelopes, sync, batch)
            results["worker"][0].append(results["consume + ack"][0][-1])
            record("worker", 1, courier_worker(base / "c3.db", count, sync, batch))
            raw_publish_batched(base / "raw3.db", rows, sync, batch)
            decoding = raw_consume(base / "raw3.db", count, sync, batch, decode=True)
            record("consume + decode", 0, decoding)
            results["consume + decode"][1].append(results["consume + ack"][1][-1])
            record("worker + decode", 0, decoding)
            results["worker + decode"][1].append(results["worker"][1][-1])
            if huey_installed():
                results.setdefault("huey", ([], []))
                record("huey", 0, huey_worker(base / "huey.db", messages))
                results["huey"][1].append(results["worker"][1][-1])
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--synchronous", choices=["normal", "full"], default="normal")
    args = parser.parse_args(argv)
    results = measure(args)
    median = statistics.median
    print(
        f"\nsqlite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {args.messages:,} messages, batches of {args.batch}, "
        f"WAL, synchronous={args.synchronous}, median of {args.runs} runs (msgs/s)\n"
    )
    print(f"{'phase':<18}{'raw sqlite3':>14}{'courier':>12}{'ratio':>8}")
    huey = results.pop("huey", None)
    if huey is not None:
        results["huey"] = huey  # last, after the raw + decode rows
    for name, (raw, ours) in results.items():
        label = {
            "worker": "worker (full)",
            "huey": "huey (peer)",
            "consume + decode": "consume + ack",
            "worker + decode": "worker (full)",
        }.get(name, name)
        if name == "consume + decode":
            print("\nagainst raw + decode (headers parsed, body validated, handler called):")
        # The median of each run's own ratio: raw and courier ran back to
        # back, so the machine's load changes less between them than between runs.
        ratio = median(o / r for r, o in zip(raw, ours, strict=True))
        print(f"{label:<18}{median(raw):>14,.0f}{median(ours):>12,.0f}{ratio:>8.2f}")
    print("\nworker (full): Bus + Worker + consume middleware, vs raw consume + ack.")
    if "huey" in results:
        print("huey (peer): SqliteHuey dequeue + execute (raw column), vs the courier worker.")
    print("ratio: the median of the runs' ratios (raw and courier measured back to back).")


if __name__ == "__main__":
    main()
