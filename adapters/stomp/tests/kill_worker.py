"""A worker process for test_worker.py: real subprocesses, a ledger, SIGKILL and os._exit.

Usage: ``python kill_worker.py LEDGER STORE`` with the DSN in the environment
variable ``COURIER_TEST_WORKER_DSN`` (not on the command line: it holds the
password). Each handled job appends its number to LEDGER, then the worker
acknowledges it in a batch, as every courier worker does. A job with a
negative number kills the process (``os._exit``) while its handler runs.
Failed and undecodable messages go to the SQLite file STORE, so the test
can read them after the process is gone. ``COURIER_TEST_WORKER_LIMIT`` stops
the worker after that many messages; ``COURIER_TEST_MAX_DELIVERIES`` sets
the bus's ``max_deliveries``; ``COURIER_TEST_HANDLER_SECONDS`` how long each
handler takes (default 0.005).
"""

from __future__ import annotations

import os
import sys
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "courier.stomp-test.job"

    n: int


def main(ledger_path: str, store: str) -> None:
    limit = os.environ.get("COURIER_TEST_WORKER_LIMIT")
    seconds = float(os.environ.get("COURIER_TEST_HANDLER_SECONDS", "0.005"))
    bus = Bus(
        transports={
            "work": os.environ["COURIER_TEST_WORKER_DSN"],
            "failed": f"sqlite:///{store}?queue=failed",
            "invalid": f"sqlite:///{store}?queue=invalid",
        },
        failure_transport="failed",
        invalid_transport="invalid",
        max_deliveries=int(os.environ.get("COURIER_TEST_MAX_DELIVERIES", "10")),
    )
    bus.route(Job, "work")
    with open(ledger_path, "a", buffering=1) as ledger:

        @bus.handler(Job)
        def handle(job: Job) -> None:
            if job.n < 0:
                os._exit(3)  # a handler that takes its worker down, every time
            time.sleep(seconds)
            ledger.write(f"{job.n}\n")

        options = WorkerOptions(
            prefetch=10, sleep=0.2, limit=int(limit) if limit else None, time_limit=60
        )
        Worker(bus, ["work"], options=options).run()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
