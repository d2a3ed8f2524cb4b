"""A consumer process for the wake tests: polls every 5 s, so only a wake explains speed.

    python wake_worker.py receive <database> <ledger>
    python wake_worker.py worker <database> <ledger> <count>

``receive``: one ``transport.receive(timeout=30)`` on ``jobs`` with
``poll_interval=5``; writes ``time.time()`` when it returns a message.

``worker``: a :class:`~courier.Worker` handling ``count`` messages, whose
handler appends ``<n> <time.time()>`` to the ledger at its start. (A
worker's receive waits at most a second before looking round, so each
message would otherwise wait up to a second.)
"""

from __future__ import annotations

import sys
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class Ping(Message):
    message_name: ClassVar[str] = "tests.sqlite.ping"

    n: int


def main() -> None:
    mode, database, ledger = sys.argv[1], sys.argv[2], sys.argv[3]
    bus = Bus(transports={"jobs": f"sqlite:///{database}?queue=jobs&poll_interval=5"})
    bus.route(Ping, "jobs")
    if mode == "receive":
        received = bus.transport("jobs").receive(["jobs"], timeout=30)
        with open(ledger, "w") as file:
            file.write(repr(time.time()))
        assert len(received) == 1
        bus.transport("jobs").ack(received[0])
    else:

        @bus.handler(Ping)
        def record(ping: Ping) -> None:
            with open(ledger, "a") as file:
                file.write(f"{ping.n} {time.time()!r}\n")

        Worker(bus, ["jobs"], options=WorkerOptions(limit=int(sys.argv[4]), sleep=30.0)).run()
    bus.close()


if __name__ == "__main__":
    main()
