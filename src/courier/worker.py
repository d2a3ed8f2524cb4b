"""The consume loop: receive, handle, acknowledge; stop when told.

One message at a time per worker process, as in Symfony Messenger;
concurrency comes from processes. The worker:

- receives from its transports in priority order (the first one listed is
  drained first), never prefetching more than ``limit`` has left;
- hands each message to :meth:`Bus.consume` and acknowledges the ones that
  need it in batches with ``ack_many``, flushing before every blocking
  receive and before it stops;
- stops after the message in hand on SIGTERM, SIGINT or SIGQUIT, releasing
  what it prefetched; or when a limit is reached;
- renews the lease of every message it holds from a keepalive thread;
- on a :class:`TransportError` waits with backoff and jitter and carries on:
  transports reconnect on their next call, and whatever was in flight is
  redelivered by the broker.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from courier.allocator import return_large_blocks_to_the_os
from courier.errors import ConfigurationError, HandlerFailed, StopWorker, TransportError
from courier.events import (
    MessageFailed,
    MessageHandled,
    MessageReceived,
    MessageRetried,
    StopReason,
    TransportFailed,
    WorkerEvent,
    WorkerListener,
    WorkerStarted,
    WorkerStopped,
)
from courier.transports.base import NEEDS_ACK, Outcome, Received, Transport

if TYPE_CHECKING:
    from courier.bus import Bus

__all__ = ["Worker", "WorkerLogFilter", "WorkerOptions"]

logger = logging.getLogger("courier.worker")

_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT") if hasattr(signal, name)
)


@dataclass(frozen=True)
class WorkerOptions:
    """How long a worker runs and how it batches; every default is documented here.

    limit
        Stop after this many messages (handled or failed).
    time_limit
        Stop after this many seconds.
    memory_limit
        Stop when the process's resident memory exceeds this many MiB.
    failure_limit
        Stop after this many failed messages.
    sleep (1.0)
        Seconds to wait for messages when the queues are empty.
    stop_when_empty
        Stop as soon as a receive finds nothing.
    prefetch (10)
        Most messages taken from the broker at once.
    ack_batch (50) / ack_interval (0.1)
        Acknowledgements are sent together once this many are pending or
        the oldest has waited this many seconds, and always before a
        blocking receive and before stopping.
    keepalive
        Seconds between lease renewals; default: what the transports ask.
    reconnect_delay (0.5) / reconnect_max_delay (30.0)
        Backoff after a broker error: doubling from the first, capped by
        the second, each wait jittered by +-50%.
    """

    limit: int | None = None
    time_limit: float | None = None
    memory_limit: float | None = None
    failure_limit: int | None = None
    sleep: float = 1.0
    stop_when_empty: bool = False
    prefetch: int = 10
    ack_batch: int = 50
    ack_interval: float = 0.1
    keepalive: float | None = None
    reconnect_delay: float = 0.5
    reconnect_max_delay: float = 30.0

    def __post_init__(self) -> None:
        for name in ("limit", "failure_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("time_limit", "memory_limit", "keepalive"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"--{name.replace('_', '-')} must be positive")
        if self.sleep < 0 or self.prefetch < 1 or self.ack_batch < 1:
            raise ConfigurationError("sleep must be >= 0, prefetch and ack_batch >= 1")


def _rss_mib() -> float:
    """Current resident memory of this process in MiB."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if os.uname().sysname != "Darwin" else peak / (1024 * 1024)


@dataclass
class _Source:
    transport: Transport
    queues: list[str]
    #: Handled messages whose acknowledgement is batched, not sent yet.
    pending: list[Received] = field(default_factory=list)
    #: Broker errors in a row, and when to try this transport again.
    failures: int = 0
    retry_at: float = 0.0


class Worker:
    """Consumes ``transports`` (names configured on ``bus``) until told to stop."""

    def __init__(
        self,
        bus: Bus,
        transports: Sequence[str],
        *,
        subscriptions: Sequence[str] = (),
        options: WorkerOptions | None = None,
        worker_id: str | None = None,
        listeners: Sequence[WorkerListener] = (),
    ) -> None:
        if not transports:
            raise ConfigurationError("a worker needs at least one transport to consume")
        self.bus = bus
        self.options = options or WorkerOptions()
        bus.check(transports)
        self._sources = [
            _Source(bus.transport(name), bus.consumed_queues(name, subscriptions))
            for name in transports
        ]
        self._source_of = {id(source.transport): source for source in self._sources}
        self.worker_id = worker_id or f"{socket.gethostname()}.{os.getpid()}"
        for source in self._sources:
            source.transport.identify(self.worker_id)
            if self.options.limit is not None:
                # Never let the broker send ahead more than the limit leaves.
                source.transport.limit_prefetch(self.options.limit)
        self.instance_id = os.urandom(4).hex()
        self.listeners: list[WorkerListener] = list(listeners)
        for layer in bus.consume_middleware():
            hook = getattr(layer, "on_worker_event", None)
            if callable(hook):
                self.listeners.append(hook)
        self.handled = 0
        self.failed = 0
        self.stop_reason: StopReason | None = None
        self._wake = threading.Event()
        self._done = threading.Event()
        self._held: set[Received] = set()
        self._held_lock = threading.Lock()
        intervals = [
            interval
            for source in self._sources
            if (interval := source.transport.keepalive_interval()) is not None
        ]
        self._keepalive = self.options.keepalive or (min(intervals) if intervals else None)
        self._pending_count = 0
        self._oldest_pending = 0.0

    # -- public --------------------------------------------------------------

    @property
    def queues(self) -> dict[str, list[str]]:
        """The queues consumed, per transport name."""
        return {source.transport.name: list(source.queues) for source in self._sources}

    def add_listener(self, listener: WorkerListener) -> None:
        self.listeners.append(listener)

    def stop(self, reason: StopReason = StopReason.REQUESTED) -> None:
        """Ask the worker to stop after the message in hand; safe from any thread."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake.set()

    def run(self) -> StopReason:
        """Consume until a limit, a signal or :meth:`stop`; return why it stopped."""
        restore = self._install_signals()
        keepalive = self._start_keepalive()
        started = time.monotonic()
        self._emit(
            WorkerStarted,
            transports=tuple(source.transport.name for source in self._sources),
            queues=tuple(queue for source in self._sources for queue in source.queues),
        )
        logger.info(
            "worker started, consuming %s",
            "; ".join(f"{s.transport.name}: {', '.join(s.queues)}" for s in self._sources),
        )
        self._started = started
        self._next_memory_check = 0.0
        return_large_blocks_to_the_os()
        self.bus.poison.start(self.worker_id)
        try:
            while self.stop_reason is None:
                self._round()
                self._check_limits()
        finally:
            for source in self._sources:
                try:
                    source.transport.stop_receiving()
                except TransportError as error:
                    logger.warning("could not stop %r receiving: %s", source.transport.name, error)
            self._flush_all()
            self._done.set()
            if keepalive is not None:
                keepalive.join(timeout=5)
            self.bus.poison.stop()
            restore()
            reason = self.stop_reason or StopReason.REQUESTED
            logger.info(
                "worker stopped (%s) after %d messages, %d failed",
                reason.value,
                self.handled,
                self.failed,
            )
            self._emit(WorkerStopped, reason=reason, handled=self.handled, failed=self.failed)
        return reason

    # -- the loop ------------------------------------------------------------

    def _round(self) -> None:
        """One receive and what it brought.

        A method of its own so the batch dies with its frame: a loop variable
        would keep the last batch (bodies and all) alive while the worker
        waits for the next one, doubling its peak memory.
        """
        batch = self._receive_round()
        if batch is None:
            self._wait_for_a_transport()
        elif batch:
            self._process_batch(batch)
        elif self.options.stop_when_empty:
            self.stop(StopReason.EMPTY)

    def _wanted(self) -> int:
        wanted = self.options.prefetch
        if self.options.limit is not None:
            wanted = min(wanted, self.options.limit - self.handled)
        return max(wanted, 1)

    def _receive_round(self) -> list[Received] | None:
        """Messages from the most urgent transport that has some.

        A transport that failed is skipped until its backoff ends, so one
        broker going away does not stop the others. Returns [] when every
        transport answered and none had anything, None when some could not
        be asked (so "empty" is never concluded from a broker that could not
        answer).
        """
        wanted = self._wanted()
        now = time.monotonic()
        block = len(self._sources) == 1
        asked = 0
        for source in self._sources:
            if source.retry_at > now:
                continue
            timeout = min(self.options.sleep, 1.0) if block else 0.0
            if timeout:
                self._flush_all()
            try:
                batch = source.transport.receive(source.queues, max=wanted, timeout=timeout)
            except TransportError as error:
                self._backoff(source, error)
                continue
            asked += 1
            source.failures = 0
            if batch:
                return batch
        if asked < len(self._sources):
            return None
        if not block:
            self._flush_all()
            if self.stop_reason is None and not self.options.stop_when_empty:
                self._wake.wait(self.options.sleep)
                self._wake.clear()
        return []

    def _process_batch(self, batch: list[Received]) -> None:
        """Handle ``batch`` in order, emptying the list as it goes.

        A message leaves the list before it is handled, so once settled it
        is kept alive by nothing of the worker's: a batch of large bodies
        never holds the handled ones while the broker sends the next.
        """
        track = self._keepalive is not None
        if track:
            with self._held_lock:
                self._held.update(batch)
        batch.reverse()
        try:
            while batch:
                self._check_limits()
                if self.stop_reason is not None:
                    break
                received = batch.pop()
                self._process(received)
                if track and received.outcome not in NEEDS_ACK:
                    with self._held_lock:
                        self._held.discard(received)
        finally:
            # Stopping, or something unexpected escaped: what is left goes back now.
            batch.reverse()
            self._release(batch)

    def _process(self, received: Received) -> None:
        listeners = self.listeners
        if listeners:
            self._emit(MessageReceived, received=received)
        started = time.perf_counter() if listeners else 0.0
        if received.delivery_count > 1 and self._pending_count:
            # A redelivery may be the message that kills workers: settle what
            # was handled before it, so a death does not bring that back too.
            self._flush_all()
        try:
            outcome = self.bus.consume(received)
        except TransportError as error:
            # Settling failed (a retry or dead-letter write did not go
            # through): nothing was acknowledged. Give the message back now;
            # a broker that holds it on a live connection would not
            # redeliver it otherwise, and its slot would stay taken.
            self._release([received])
            self._backoff(self._source_of[id(received.transport)], error)
            return
        self.handled += 1
        if outcome is Outcome.ACK:
            self._ack_later(received)
        elif outcome is Outcome.DEAD_LETTERED:
            # At once: its record is written, and a death before a batched
            # ack would bring it back to be written again.
            self._ack_later(received)
            self._flush_all()
        elif self._pending_count and self._flush_due():
            self._flush_all()
        failure = received.failure
        if failure is None:
            if listeners:
                self._emit(MessageHandled, received=received, seconds=time.perf_counter() - started)
        else:
            self.failed += 1
            if listeners:
                retried = outcome is Outcome.RETRIED
                self._emit(
                    MessageFailed,
                    received=received,
                    error=failure,
                    outcome=outcome,
                    will_retry=retried,
                )
                if retried:
                    self._emit(MessageRetried, received=received)
            if _asks_to_stop(failure):
                self.stop(StopReason.REQUESTED)
        limits = self.options
        if limits.limit is not None and self.handled >= limits.limit:
            self.stop(StopReason.LIMIT)
        elif limits.failure_limit is not None and self.failed >= limits.failure_limit:
            self.stop(StopReason.FAILURE_LIMIT)

    def _check_limits(self) -> None:
        """Time and memory limits, checked before every message, not only between batches."""
        now = time.monotonic()
        limit = self.options.time_limit
        if limit is not None and now - self._started >= limit:
            self.stop(StopReason.TIME_LIMIT)
        if now >= self._next_memory_check:
            # Reading /proc costs more than a message: four times a second.
            self._next_memory_check = now + 0.25
            self._check_memory()
        if self._pending_count and self._flush_due(now):
            self._flush_all()

    def _check_memory(self) -> None:
        limit = self.options.memory_limit
        if limit is not None and _rss_mib() >= limit:
            self.stop(StopReason.MEMORY_LIMIT)

    # -- acknowledgements ----------------------------------------------------

    def _ack_later(self, received: Received) -> None:
        source = self._source_of.get(id(received.transport))
        if source is None:  # pragma: no cover - a Received comes from a consumed transport
            received.transport.ack(received)
            return
        if not self._pending_count:
            self._oldest_pending = time.monotonic()
        source.pending.append(received)
        self._pending_count += 1
        if self._pending_count >= self.options.ack_batch or self._flush_due():
            self._flush_all()

    def _flush_due(self, now: float | None = None) -> bool:
        """Whether the oldest pending acknowledgement has waited ``ack_interval``."""
        waited = (now if now is not None else time.monotonic()) - self._oldest_pending
        return waited >= self.options.ack_interval

    def _flush_all(self) -> None:
        if not self._pending_count:
            return
        for source in self._sources:
            if not source.pending:
                continue
            batch = source.pending
            if self._keepalive is not None:
                # Out of the keepalive's reach before the ack: a renewal racing
                # the ack would find the message gone and warn of a lost lease.
                with self._held_lock:
                    self._held.difference_update(batch)
            try:
                source.transport.ack_many(batch)
            except TransportError as error:
                # Kept for the next flush: the handle outlives the connection
                # where the broker keeps it; where it does not, the transport
                # drops acknowledgements from an older connection itself.
                if self._keepalive is not None:
                    with self._held_lock:
                        self._held.update(batch)
                self._backoff(source, error)
                continue
            source.pending = []
            self._pending_count -= len(batch)

    def _release(self, batch: Sequence[Received]) -> None:
        for received in batch:
            try:
                received.transport.release(received)
            except TransportError as error:
                logger.warning("could not release %r: %s", received, error)
        if self._keepalive is not None:
            with self._held_lock:
                self._held.difference_update(batch)

    # -- failures of the broker ----------------------------------------------

    def _backoff(self, source: _Source, error: TransportError) -> None:
        """Rest ``source`` with exponential backoff and jitter; the others carry on."""
        source.failures += 1
        options = self.options
        wait = min(
            options.reconnect_max_delay, options.reconnect_delay * 2 ** min(source.failures - 1, 30)
        )
        wait *= random.uniform(0.5, 1.5)
        source.retry_at = time.monotonic() + wait
        logger.warning(
            "transport %r failed (%s: %s); trying again in %.1fs (attempt %d)",
            source.transport.name,
            type(error).__name__,
            error,
            wait,
            source.failures,
        )
        self._emit(
            TransportFailed,
            transport=source.transport.name,
            error=error,
            attempt=source.failures,
            retry_in=wait,
        )

    def _wait_for_a_transport(self) -> None:
        """Some transport is backing off: wait for it, or a while if others answer."""
        self._flush_all()
        now = time.monotonic()
        resting = [source.retry_at for source in self._sources if source.retry_at > now]
        wait = (min(resting) - now) if resting else 0.0
        if len(resting) < len(self._sources):
            # The healthy ones were empty just now: look again after ``sleep``.
            wait = min(wait, max(self.options.sleep, 0.05))
        if wait > 0 and self.stop_reason is None:
            self._wake.wait(wait)
            self._wake.clear()

    # -- threads and signals ---------------------------------------------------

    def _start_keepalive(self) -> threading.Thread | None:
        interval = self._keepalive
        if interval is None:
            return None
        thread = threading.Thread(
            target=self._renew_forever, args=(interval,), name="courier-keepalive", daemon=True
        )
        thread.start()
        return thread

    def _renew_forever(self, interval: float) -> None:
        while not self._done.wait(interval):
            self._renew_held()

    def _renew_held(self) -> None:
        """One round of renewals; its own frame, so nothing held outlives the round."""
        with self._held_lock:
            held = list(self._held)
        for received in held:
            # Each renewal under the lock, if the message is still held: the
            # worker takes it out (and so waits) before settling it.
            with self._held_lock:
                if received not in self._held:
                    continue
                try:
                    received.transport.renew(received)
                except TransportError as error:
                    logger.warning("could not renew %r: %s", received, error)

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, object] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only flags here: no I/O, no locks (the loop notices within a second).
            self.stop(StopReason.SIGNAL)

        for signum in _STOP_SIGNALS:
            previous[signum] = signal.signal(signum, on_signal)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

        return restore

    # -- events --------------------------------------------------------------

    def _emit(self, kind: Callable[..., WorkerEvent], **fields: object) -> None:
        if not self.listeners:
            return
        event = kind(worker_id=self.worker_id, instance_id=self.instance_id, **fields)
        for listener in self.listeners:
            try:
                listener(event)
            except StopWorker:
                self.stop(StopReason.REQUESTED)
            except Exception:
                logger.exception("worker listener %r failed", listener)


def _asks_to_stop(error: BaseException) -> bool:
    if isinstance(error, StopWorker):
        return True
    return isinstance(error, HandlerFailed) and any(isinstance(e, StopWorker) for e in error.errors)


class WorkerLogFilter(logging.Filter):
    """Adds ``worker_id`` and ``instance_id`` to every record that passes a handler."""

    def __init__(self, worker_id: str = "-", instance_id: str = "-") -> None:
        super().__init__()
        self.worker_id = worker_id
        self.instance_id = instance_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        record.instance_id = self.instance_id
        return True
