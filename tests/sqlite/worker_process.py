"""A worker process for the multi-process SQLite tests, run with ``subprocess``.

``consume``: a real courier :class:`~courier.Worker` on the ``jobs`` queue;
its handler appends each job's number to ``<ledger>/<pid>.txt`` with one
unbuffered write, so a SIGKILL loses no ledger line of a handled job. Any
transport failure (a "database is locked" among them) is written to stderr
and makes the exit code 3.

``hold``: claim ``--count`` jobs, say so on stdout, and sleep until killed.

Both wait for ``--go`` (a file) before touching the queue, so the test can
start several processes and release them at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import ClassVar

from courier import Bus, Message
from courier.events import TransportFailed, WorkerEvent
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "tests.sqlite.job"

    n: int


def wait_for(go: str | None) -> None:
    while go and not os.path.exists(go):
        time.sleep(0.005)


def consume(args: argparse.Namespace, bus: Bus) -> int:
    ledger = os.open(
        Path(args.ledger) / f"{os.getpid()}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND
    )
    failures: list[str] = []

    @bus.handler(Job)
    def record(job: Job) -> None:
        os.write(ledger, f"{job.n}\n".encode())
        if args.sleep:
            time.sleep(args.sleep)

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, TransportFailed):
            failures.append(f"{type(event.error).__name__}: {event.error}")
            print(f"transport failed: {failures[-1]}", file=sys.stderr, flush=True)

    options = WorkerOptions(stop_when_empty=args.stop_when_empty, sleep=0.2)
    worker = Worker(bus, ["jobs"], options=options, listeners=[on_event])
    Path(args.ready).touch()
    wait_for(args.go)
    worker.run()
    os.close(ledger)
    return 3 if failures else 0


def hold(args: argparse.Namespace, bus: Bus) -> int:
    transport = bus.transport("jobs")
    Path(args.ready).touch()
    wait_for(args.go)
    held = transport.receive(max=args.count, timeout=5)
    print(f"holding {len(held)}", flush=True)
    time.sleep(3600)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["consume", "hold"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--ledger", default=".")
    parser.add_argument("--ready", required=True)
    parser.add_argument("--go")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--stop-when-empty", action="store_true")
    args = parser.parse_args()
    bus = Bus(transports={"jobs": args.dsn})
    bus.route(Job, "jobs")
    try:
        return consume(args, bus) if args.mode == "consume" else hold(args, bus)
    finally:
        bus.transport("jobs").close()


if __name__ == "__main__":
    sys.exit(main())
