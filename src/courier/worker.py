"""The consume loop: receive, handle, acknowledge; stop when told.

One message at a time per worker process, as in Symfony Messenger;
concurrency comes from processes. The worker:

- receives from its transports in priority order (the first one listed is
  drained first), never prefetching more than ``limit`` has left;
- hands each message to :meth:`Bus.consume` and acknowledges the ones that
  need it in batches (:mod:`courier.acknowledgements`);
- stops after the message in hand on SIGTERM, SIGINT or SIGQUIT, releasing
  what it prefetched; a second signal stops it now, giving the message in
  hand back (:mod:`courier.stop_signals`); or when a limit is reached;
- renews the lease of every message it holds (:mod:`courier.keepalive`);
- on a :class:`TransportError` waits with backoff and jitter and carries on:
  transports reconnect on their next call, and whatever was in flight is
  redelivered by the broker.

It counts three things, each meaning one thing: ``handled`` (the handler
succeeded), ``failed`` (failed for good: dead-lettered or rejected) and
``retried`` (failed, and will come again).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from courier.acknowledgements import Acknowledgements
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
    WorkerStopping,
)
from courier.keepalive import Keepalive
from courier.stop_signals import StopNow, StopSignals
from courier.transports.base import Outcome, Received
from courier.worker_logging import WorkerLogFilter
from courier.worker_options import WorkerOptions, rss_mib
from courier.worker_sources import Source, drained, next_try_in

if TYPE_CHECKING:
    from courier.bus import Bus

__all__ = ["Worker", "WorkerLogFilter", "WorkerOptions"]

logger = logging.getLogger("courier.worker")

#: Outcomes that mean "failed, and will come again".
_AGAIN = frozenset({Outcome.RETRIED, Outcome.RELEASED})


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
            Source(bus.transport(name), bus.consumed_queues(name, subscriptions))
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
        #: Messages whose handler succeeded.
        self.handled = 0
        #: Messages that failed for good (dead-lettered or rejected).
        self.failed = 0
        #: Failures that will come again (retried, or given back to the broker).
        self.retried = 0
        self.stop_reason: StopReason | None = None
        self._wake = threading.Event()
        #: Transport names not to receive from (``courier pause``); replaced whole, never mutated.
        self._paused: frozenset[str] = frozenset()
        intervals = [
            interval
            for source in self._sources
            if (interval := source.transport.keepalive_interval()) is not None
        ]
        self._keepalive = Keepalive(self.options.keepalive or (min(intervals, default=None)))
        self._acks = Acknowledgements(
            batch=self.options.ack_batch,
            interval=self.options.ack_interval,
            keepalive=self._keepalive,
            on_error=lambda transport, error: self._backoff(self._source_of[id(transport)], error),
            before=bus.flush,
        )
        self._signals = StopSignals(self._on_first_signal)
        self._started = 0.0
        self._next_memory_check = 0.0

    # -- public --------------------------------------------------------------

    @property
    def queues(self) -> dict[str, list[str]]:
        """The queues consumed, per transport name."""
        return {source.transport.name: list(source.queues) for source in self._sources}

    @property
    def processed(self) -> int:
        """Every message settled so far, whatever became of it (what ``limit`` counts)."""
        return self.handled + self.failed + self.retried

    def add_listener(self, listener: WorkerListener) -> None:
        self.listeners.append(listener)

    def stop(self, reason: StopReason = StopReason.REQUESTED) -> None:
        """Ask the worker to stop after the message in hand; safe from any thread."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake.set()

    def pause_transports(self, names: frozenset[str] | set[str]) -> None:
        """Receive from none of ``names`` (and again from the others); safe from any thread.

        Messages already received are handled as usual; a paused transport
        keeps its connection, it is only not asked for more.
        """
        paused = frozenset(names)
        if paused != self._paused:
            self._paused = paused
            self._wake.set()

    @property
    def paused(self) -> frozenset[str]:
        """The consumed transports not received from now."""
        return self._paused & {source.transport.name for source in self._sources}

    def run(self) -> StopReason:
        """Consume until a limit, a signal or :meth:`stop`; return why it stopped."""
        self._signals.install()
        self._keepalive.start()
        self._started = time.monotonic()
        self._emit(
            WorkerStarted,
            transports=tuple(source.transport.name for source in self._sources),
            queues=tuple(queue for source in self._sources for queue in source.queues),
        )
        logger.info(
            "worker started, consuming %s",
            "; ".join(f"{s.transport.name}: {', '.join(s.queues)}" for s in self._sources),
        )
        return_large_blocks_to_the_os()
        self.bus.poison.start(self.worker_id)
        try:
            while self.stop_reason is None:
                self._round()
                self._check_limits()
        except StopNow:
            self.stop_reason = StopReason.INTERRUPTED
            logger.warning("stopped at once by a second signal")
        finally:
            self._finish()
        return self.stop_reason or StopReason.REQUESTED

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
        elif self.options.stop_when_idle or (self.options.stop_when_empty and self._drained()):
            self.stop(StopReason.EMPTY)

    def _wanted(self) -> int:
        wanted = self.options.prefetch
        if self.options.limit is not None:
            wanted = min(wanted, self.options.limit - self.processed)
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
        paused = self._paused
        if paused and self._all_paused(paused):
            self._idle_while_paused()
            return None
        block = len(self._sources) == 1
        asked = 0
        for source in self._sources:
            if source.retry_at > now:
                continue
            if paused and source.transport.name in paused:
                asked += 1  # as good as empty
                continue
            timeout = min(self.options.sleep, 1.0) if block else 0.0
            try:
                if timeout and self.options.stops_when_empty:
                    batch = self._look_then_wait(source, wanted, timeout)
                else:
                    batch = self._receive(source, wanted, timeout)
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
            self._acks.flush()
            if self.stop_reason is None and not self.options.stops_when_empty:
                self._wake.wait(self.options.sleep)
                self._wake.clear()
        return []

    def _look_then_wait(self, source: Source, wanted: int, timeout: float) -> list[Received]:
        """For a run that stops when empty: wait only while something may still come.

        A look that does not wait first; if it finds nothing and nothing is
        in flight or delayed either, the run is over now (``_round`` stops
        it), not after waiting ``sleep`` for messages nobody will send. A
        delayed retry, or a message another worker holds, is waited for as
        before. Our own acknowledgements go out first: pending, they would
        count as messages in flight.
        """
        batch = self._receive(source, wanted, 0.0)
        if batch:
            return batch
        self._acks.flush()
        if self.options.stop_when_idle or self._drained():
            return batch
        return self._receive(source, wanted, timeout)

    def _all_paused(self, paused: frozenset[str]) -> bool:
        return all(source.transport.name in paused for source in self._sources)

    def _idle_while_paused(self) -> None:
        """Nothing to receive from: wait ``sleep`` or until woken (resume, stop).

        None, not []: a paused queue is not an empty one (``--stop-when-idle``).
        """
        self._acks.flush()
        if self.stop_reason is None:
            self._wake.wait(max(self.options.sleep, 0.05))
            self._wake.clear()

    def _receive(self, source: Source, wanted: int, timeout: float) -> list[Received]:
        """One receive; pending acknowledgements go out first only if it may block.

        A look that does not wait comes first while acknowledgements are
        pending: when it brings messages, they wait for their batch; when it
        brings none, they are flushed before the receive that waits.
        """
        transport = source.transport
        if timeout and self._acks.count:
            batch = transport.receive(source.queues, max=wanted, timeout=0.0)
            if batch:
                return batch
            self._acks.flush()
        return transport.receive(source.queues, max=wanted, timeout=timeout)

    def _drained(self) -> bool:
        """Nothing ready, in flight or delayed on any consumed queue (``--stop-when-empty``).

        Retries still waiting for their delay, and messages other workers
        hold (they may fail and come back), keep the worker running. A count
        a broker cannot tell is taken as nothing.
        """
        for source in self._sources:
            try:
                if not drained(source):
                    return False
            except TransportError as error:
                self._backoff(source, error)
                return False
        return True

    def _process_batch(self, batch: list[Received]) -> None:
        """Handle ``batch`` in order, emptying the list as it goes.

        A message leaves the list before it is handled, so once settled it
        is kept alive by nothing of the worker's: a batch of large bodies
        never holds the handled ones while the broker sends the next.
        """
        keepalive = self._keepalive
        keepalive.hold(batch)
        batch.reverse()
        try:
            while batch:
                self._check_limits()
                if self.stop_reason is not None:
                    break
                received = batch.pop()
                self._process(received)
                outcome = received.outcome
                # Identity, not ``in NEEDS_ACK``: an Enum hashes in Python code.
                if outcome is not Outcome.ACK and outcome is not Outcome.DEAD_LETTERED:
                    keepalive.let_go((received,))
        finally:
            # Stopping, or something unexpected escaped: what is left goes back now.
            batch.reverse()
            self._release(batch)

    def _process(self, received: Received) -> None:
        listeners = self.listeners
        if listeners:
            self._emit(MessageReceived, received=received)
        started = time.perf_counter() if listeners else 0.0
        if received.delivery_count > 1 and self._acks.count:
            # A redelivery may be the message that kills workers: settle what
            # was handled before it, so a death does not bring that back too.
            self._acks.flush()
        try:
            outcome = self.bus.consume(received)
        except StopNow:
            # Stopped now, mid-handler: back to the broker undamaged.
            self._release([received])
            raise
        except TransportError as error:
            # Settling failed (a retry or dead-letter write did not go
            # through): nothing was acknowledged. Give the message back now;
            # a broker that holds it on a live connection would not
            # redeliver it otherwise, and its slot would stay taken.
            self._release([received])
            self._backoff(self._source_of[id(received.transport)], error)
            return
        if outcome is Outcome.ACK:
            self._acks.add(received)
        elif outcome is Outcome.DEAD_LETTERED:
            # At once: its record is written, and a death before a batched
            # ack would bring it back to be written again.
            self._acks.add(received)
            self._acks.flush()
        elif self._acks.due():
            self._acks.flush()
        failure = received.failure
        if failure is None:
            self.handled += 1
            if listeners:
                self._emit(MessageHandled, received=received, seconds=time.perf_counter() - started)
        else:
            again = outcome in _AGAIN
            if again:
                self.retried += 1
            else:
                self.failed += 1
            if listeners:
                self._emit(
                    MessageFailed,
                    received=received,
                    error=failure,
                    outcome=outcome,
                    will_retry=again,
                )
                if outcome is Outcome.RETRIED:
                    self._emit(MessageRetried, received=received)
            if _asks_to_stop(failure):
                self.stop(StopReason.REQUESTED)
        limits = self.options
        if limits.limit is not None and self.processed >= limits.limit:
            self.stop(StopReason.LIMIT)
        elif (
            limits.failure_limit is not None and self.failed + self.retried >= limits.failure_limit
        ):
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
            memory = self.options.memory_limit
            if memory is not None and rss_mib() >= memory:
                self.stop(StopReason.MEMORY_LIMIT)
        if self._acks.due(now):
            self._acks.flush()

    def _release(self, batch: Sequence[Received]) -> None:
        for received in batch:
            try:
                received.transport.release(received)
            except TransportError as error:
                logger.warning("could not release %r: %s", received, error)
        self._keepalive.let_go(batch)

    def _finish(self) -> None:
        """Stop cleanly: no more pushed ahead, the last acknowledgements, threads and slots."""
        for source in self._sources:
            try:
                source.transport.stop_receiving()
            except TransportError as error:
                logger.warning("could not stop %r receiving: %s", source.transport.name, error)
        self._acks.flush()
        self._keepalive.stop()
        self.bus.poison.stop()
        self._signals.restore()
        reason = self.stop_reason or StopReason.REQUESTED
        logger.info(
            "worker stopped (%s): %d handled, %d failed, %d retried",
            reason.value,
            self.handled,
            self.failed,
            self.retried,
        )
        self._emit(
            WorkerStopped,
            reason=reason,
            handled=self.handled,
            failed=self.failed,
            retried=self.retried,
        )

    # -- failures of the broker ----------------------------------------------

    def _backoff(self, source: Source, error: TransportError) -> None:
        """Rest ``source`` with exponential backoff and jitter; the others carry on."""
        wait = source.rest(error, self.options)
        self._emit(
            TransportFailed,
            transport=source.transport.name,
            error=error,
            attempt=source.failures,
            retry_in=wait,
        )

    def _wait_for_a_transport(self) -> None:
        """Some transport is backing off: wait for it, or a while if others answer."""
        self._acks.flush()
        wait = next_try_in(self._sources, self.options.sleep)
        if wait > 0 and self.stop_reason is None:
            self._wake.wait(wait)
            self._wake.clear()

    # -- signals and events ----------------------------------------------------

    def _on_first_signal(self, signum: int) -> None:
        """The first stop signal: finish the message in hand (from the signal handler)."""
        self.stop(StopReason.SIGNAL)
        self._emit(WorkerStopping, reason=StopReason.SIGNAL, signal=signum)

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
