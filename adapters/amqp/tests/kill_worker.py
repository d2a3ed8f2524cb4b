"""A worker process for test_worker.py's SIGKILL case.

Usage: ``python kill_worker.py LEDGER`` with the DSN in the environment
variable ``COURIER_TEST_WORKER_DSN`` (not on the command line: it holds the
password). Each handled job appends its number to LEDGER, then the worker
acknowledges it in a batch, as every courier worker does; the test kills
this process with SIGKILL while it holds prefetched messages.
"""

from __future__ import annotations

import os
import sys
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "courier.amqp-test.job"

    n: int


def main(ledger_path: str) -> None:
    bus = Bus(
        transports={"work": os.environ["COURIER_TEST_WORKER_DSN"], "failed": "memory://"},
        failure_transport="failed",
    )
    bus.route(Job, "work")
    with open(ledger_path, "a", buffering=1) as ledger:

        @bus.handler(Job)
        def handle(job: Job) -> None:
            time.sleep(0.005)
            ledger.write(f"{job.n}\n")

        Worker(bus, ["work"], options=WorkerOptions(prefetch=10, sleep=0.2)).run()
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1])
