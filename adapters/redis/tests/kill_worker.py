"""A worker process for test_worker.py's SIGKILL, poison and restart cases.

Usage: ``python kill_worker.py LEDGER`` with, in the environment (not on
the command line: the DSNs may hold passwords):

- ``COURIER_TEST_WORKER_DSN``: the queue to consume;
- ``COURIER_TEST_FAILED_DSN``: the failure store (default ``memory://``);
- ``COURIER_TEST_POISON``: the job number whose handler calls ``os._exit``;
- ``COURIER_TEST_SLEEP``: seconds each handler sleeps (default 0.005);
- ``COURIER_TEST_PREFETCH`` (10) and ``COURIER_TEST_MAX_DELIVERIES`` (10).

Each handled job appends ``<n>`` to LEDGER (a poison job appends ``start
<n>`` first), then the worker acknowledges it in a batch, as every courier
worker does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "courier.redis-test.job"

    n: int


def main(ledger_path: str) -> None:
    environ = os.environ
    poison = int(environ.get("COURIER_TEST_POISON", "-1"))
    pause = float(environ.get("COURIER_TEST_SLEEP", "0.005"))
    bus = Bus(
        transports={
            "work": environ["COURIER_TEST_WORKER_DSN"],
            "failed": environ.get("COURIER_TEST_FAILED_DSN", "memory://"),
        },
        failure_transport="failed",
        max_deliveries=int(environ.get("COURIER_TEST_MAX_DELIVERIES", "10")),
    )
    bus.route(Job, "work")
    with open(ledger_path, "a", buffering=1) as ledger:

        @bus.handler(Job)
        def handle(job: Job) -> None:
            if job.n == poison:
                ledger.write(f"start {job.n}\n")
                ledger.flush()
                os._exit(3)
            time.sleep(pause)
            ledger.write(f"{job.n}\n")

        prefetch = int(environ.get("COURIER_TEST_PREFETCH", "10"))
        options = WorkerOptions(prefetch=prefetch, sleep=0.2, time_limit=60)
        Worker(bus, ["work"], options=options).run()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1])
