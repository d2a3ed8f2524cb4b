"""A real courier worker process for test_worker.py and test_php.py.

Usage: ``python worker_process.py`` with its settings in the environment
(never the command line, where a DSN's password would show):

COURIER_TEST_WORKER_DSN
    the ``work`` transport (a beanstalk:// DSN).
COURIER_TEST_STORE
    a SQLite file holding the ``failed`` and ``invalid`` transports.
COURIER_TEST_LEDGER
    a file; each handled message appends one line, with one unbuffered
    write, so a SIGKILL loses no line of a message that was handled.
COURIER_TEST_SLEEP (0)
    seconds each handler sleeps after writing its line.
COURIER_TEST_POISON
    a job number whose handler kills the process (``os._exit(3)``).
COURIER_TEST_FLAKY
    email subjects whose handler fails on the first attempt.
COURIER_TEST_PREFETCH (10), COURIER_TEST_MAX_DELIVERIES (10)
    the worker's and the bus's settings.

Ledger lines: ``job <n> <pid>`` for a Job when its handler starts,
``email <to> <subject> <envelope id> <attempt>`` for a SendEmail.
"""

from __future__ import annotations

import os
import time
from typing import ClassVar

from courier import Bus, Envelope, Message
from courier.middleware.retry import RetryStrategy
from courier.worker import Worker, WorkerOptions


class Job(Message):
    message_name: ClassVar[str] = "courier.beanstalk-test.job"

    n: int


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str


def main() -> None:
    env = os.environ
    store = env["COURIER_TEST_STORE"]
    bus = Bus(
        transports={
            "work": env["COURIER_TEST_WORKER_DSN"],
            "failed": f"sqlite:///{store}?queue=failed",
            "invalid": f"sqlite:///{store}?queue=invalid",
        },
        failure_transport="failed",
        invalid_transport="invalid",
        max_deliveries=int(env.get("COURIER_TEST_MAX_DELIVERIES", "10")),
        retry=RetryStrategy(max_retries=2, delay=1.0, jitter=0.0),
    )
    bus.route(Job, "work")
    bus.route(SendEmail, "work")
    ledger = os.open(env["COURIER_TEST_LEDGER"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    pause = float(env.get("COURIER_TEST_SLEEP", "0"))
    poison = int(env.get("COURIER_TEST_POISON", "-1"))
    flaky = set(filter(None, env.get("COURIER_TEST_FLAKY", "").split(",")))

    @bus.handler(Job)
    def handle_job(job: Job) -> None:
        if job.n == poison:
            os._exit(3)
        os.write(ledger, f"job {job.n} {os.getpid()}\n".encode())
        if pause:
            time.sleep(pause)

    @bus.handler(SendEmail)
    def handle_email(email: SendEmail, envelope: Envelope) -> None:
        line = f"email {email.to} {email.subject} {envelope.id} {envelope.attempt}\n"
        os.write(ledger, line.encode())
        if email.subject in flaky and envelope.attempt == 1:
            raise RuntimeError("the first attempt fails")

    prefetch = int(env.get("COURIER_TEST_PREFETCH", "10"))
    Worker(bus, ["work"], options=WorkerOptions(prefetch=prefetch, sleep=0.2)).run()
    os.close(ledger)
    bus.close()


if __name__ == "__main__":
    main()
