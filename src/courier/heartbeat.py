"""The heartbeat: a worker's row in the status store, and the orders it reads there.

Two halves with one rule between them: **no store write per message**.

- The *listener* (``Heartbeat.__call__``, run by the worker on each event)
  only changes memory: the state (``idle``, ``handling <type>``), when it
  began, when a counter last moved, the last error. A fast worker handles
  thousands of messages a second; a write each would cost more than them.
- The *thread* writes a beat every ``interval`` seconds (and one at the
  start, one at the stop saying ``stopped``), and about once a second reads
  the two orders that ``courier stop-workers`` and ``courier pause`` leave
  in the store: a stop time later than this worker's start stops it after
  the message in hand (:attr:`StopReason.STOP_REQUESTED`), and the paused
  transports are handed to :meth:`Worker.pause_transports`.

A store that cannot be reached is logged at warning once per streak of
failures and otherwise ignored: observing a worker must never stop it.

From code::

    worker = Worker(bus, ["email"])
    Heartbeat(bus.poison.store, interval=5).attach(worker)
    worker.run()

``courier consume`` does this with ``--heartbeat SECONDS`` (default 5).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from courier.envelope import ErrorDetails
from courier.events import (
    MessageFailed,
    MessageHandled,
    MessageReceived,
    StopReason,
    WorkerEvent,
    WorkerStarted,
    WorkerStopped,
    WorkerStopping,
)
from courier.status.workers import WorkerBoard, WorkerStatus, stop_requested_since
from courier.worker_options import rss_mib

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.worker import Worker

__all__ = ["DEFAULT_INTERVAL", "Heartbeat", "attach_heartbeat", "stop_order_since"]

logger = logging.getLogger("courier.heartbeat")

#: Seconds between beats by default.
DEFAULT_INTERVAL = 5.0
#: Seconds between reads of the stop order and the paused transports.
POLL_INTERVAL = 1.0
#: The longest last error kept in a row.
MAX_ERROR = 200


class Heartbeat:
    """Beats ``worker``'s status into ``store`` and obeys the store's orders."""

    def __init__(
        self, store: WorkerBoard, *, interval: float = DEFAULT_INTERVAL, poll: float = POLL_INTERVAL
    ) -> None:
        if interval <= 0 or poll <= 0:
            raise ValueError("the heartbeat interval and poll must be positive")
        self.store = store
        self.interval = interval
        self.poll = min(poll, interval)
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._failing = False
        # What the listener keeps (plain attribute writes: no locks on the hot path).
        self.started_at = 0.0
        self.state = "idle"
        self.state_since = 0.0
        self.last_progress_at = 0.0
        self.last_error: str | None = None

    def attach(self, worker: Worker) -> Heartbeat:
        """Listen to ``worker``; the thread starts and stops with its run."""
        self._worker = worker
        worker.add_listener(self)
        return self

    # -- the listener (the worker's thread; memory only) ------------------------

    def __call__(self, event: WorkerEvent) -> None:
        now = time.time()
        if isinstance(event, MessageReceived):
            envelope = event.received.envelope
            self.state = f"handling {envelope.type if envelope is not None else '?'}"
            self.state_since = now
        elif isinstance(event, MessageHandled):
            self._settled(now)
        elif isinstance(event, MessageFailed):
            details = ErrorDetails.from_exception(event.error)
            self.last_error = f"{details.short_class}: {details.message}"[:MAX_ERROR]
            self._settled(now)
        elif isinstance(event, WorkerStopping):
            self.state = "stopping"  # from the signal handler: one assignment, nothing more
        elif isinstance(event, WorkerStarted):
            self._start(now)
        elif isinstance(event, WorkerStopped):
            self._stop(now)

    def _settled(self, now: float) -> None:
        self.state = "idle"
        self.state_since = now
        self.last_progress_at = now

    def _start(self, now: float) -> None:
        self.started_at = self.state_since = now
        self.state = "idle"
        self._done.clear()
        self._write(self.status(now))
        self._thread = threading.Thread(target=self._run, name="courier-heartbeat", daemon=True)
        self._thread.start()

    def _stop(self, now: float) -> None:
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.poll + 5.0)
        self.state, self.state_since = "stopped", now
        self._write(self.status(now))

    # -- the thread -----------------------------------------------------------------

    def status(self, now: float) -> WorkerStatus:
        """The row as of ``now``."""
        worker = self._worker
        if worker is None:
            raise RuntimeError("the heartbeat is not attached to a worker")
        state = self.state
        if state == "idle" and worker.stop_reason is not None:
            state = "stopping"
        elif state == "idle" and worker.paused and worker.paused == set(worker.queues):
            state = "paused"
        return WorkerStatus(
            worker_id=worker.worker_id,
            instance_id=worker.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=state,
            state_since=self.state_since,
            started_at=self.started_at,
            last_beat=now,
            interval=self.interval,
            handled=worker.handled,
            failed=worker.failed,
            retried=worker.retried,
            last_error=self.last_error,
            rss_mib=round(rss_mib(), 1),
            queues=worker.queues,
            last_progress_at=self.last_progress_at,
        )

    def _run(self) -> None:
        next_beat = time.monotonic() + self.interval
        while not self._done.wait(self.poll):
            self._obey()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval
                self._write(self.status(time.time()))

    def _obey(self) -> None:
        """Read the stop order and the paused transports; tell the worker."""
        worker = self._worker
        if worker is None:
            return
        try:
            stop = stop_requested_since(self.store, self.started_at)
            paused = self.store.paused()
        except Exception as error:
            self._failed("read the stop order and paused transports", error)
            return
        self._recovered()
        if stop and worker.stop_reason is None:
            logger.info("stopping after the message in hand: courier stop-workers was run")
            worker.stop(StopReason.STOP_REQUESTED)
        wanted = paused & set(worker.queues)
        if wanted != worker.paused:
            logger.info("paused transports: %s", ", ".join(sorted(wanted)) or "none")
            worker.pause_transports(wanted)

    def _write(self, status: WorkerStatus) -> None:
        try:
            self.store.beat(status)
        except Exception as error:
            self._failed("write the heartbeat", error)
        else:
            self._recovered()

    def _failed(self, what: str, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "status store: could not %s (%s: %s); the worker carries on",
                what,
                type(error).__name__,
                error,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            logger.warning("status store: reachable again")


def attach_heartbeat(
    bus: Bus, worker: Worker, interval: float = DEFAULT_INTERVAL
) -> Heartbeat | None:
    """A heartbeat into the bus's status store, attached to ``worker``; None without a store."""
    store = bus.poison.store
    if store is None:
        logger.info("no status store: this worker is not listed by `courier workers`")
        return None
    return Heartbeat(store, interval=interval).attach(worker)


def stop_order_since(bus: Bus, started_at: float) -> Callable[[], bool] | None:
    """What a process pool polls: has ``courier stop-workers`` run since ``started_at``?

    The pool's children obey the order themselves and exit 0; the pool asks
    too, so that it stops instead of replacing them. None without a store.
    """
    store = bus.poison.store
    if store is None:
        return None
    return lambda: stop_requested_since(store, started_at)
