"""A worker process for test_worker.py's SIGKILL, restart and poison cases.

Usage: ``python kill_worker.py LEDGER``, configured by the environment (the
DSN is not on the command line: it holds the secret key):

- ``COURIER_TEST_WORKER_DSN``: the sqs:// DSN of the queue to consume;
- ``COURIER_TEST_FAILED_DSN``: the failure store (default ``memory://``);
- ``COURIER_TEST_PREFETCH`` (10), ``COURIER_TEST_MAX_DELIVERIES`` (10);
- ``COURIER_TEST_POISON``: a job number whose handler kills the process;
- ``COURIER_TEST_HANDLE_SECONDS`` (0.005): how long each handler runs.

Each handled job appends ``<n> <unix time>`` to LEDGER, then the worker
acknowledges it in a batch, as every courier worker does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "courier.sqs-test.job"

    n: int


def main(ledger_path: str) -> None:
    environ = os.environ
    bus = Bus(
        transports={
            "work": environ["COURIER_TEST_WORKER_DSN"],
            "failed": environ.get("COURIER_TEST_FAILED_DSN", "memory://"),
        },
        failure_transport="failed",
        max_deliveries=int(environ.get("COURIER_TEST_MAX_DELIVERIES", "10")),
    )
    bus.route(Job, "work")
    poison = int(environ.get("COURIER_TEST_POISON", "-1"))
    seconds = float(environ.get("COURIER_TEST_HANDLE_SECONDS", "0.005"))
    with open(ledger_path, "a", buffering=1) as ledger:

        @bus.handler(Job)
        def handle(job: Job) -> None:
            if job.n == poison:
                os._exit(3)  # as an OOM kill or a segfault would
            time.sleep(seconds)
            ledger.write(f"{job.n} {time.time()!r}\n")

        options = WorkerOptions(prefetch=int(environ.get("COURIER_TEST_PREFETCH", "10")), sleep=0.2)
        Worker(bus, ["work"], options=options).run()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1])
