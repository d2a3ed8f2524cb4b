"""``courier consume``: run a worker on one or more transports."""

from __future__ import annotations

import os
import signal
import time

import click
from rich.live import Live
from rich.text import Text

from courier.cli import exit_codes
from courier.cli.context import CliContext, check_transports
from courier.cli.observe import MetricsChoice, metrics_options, worker_metrics
from courier.cli.pool_command import base_id, pool_options, run_pool
from courier.events import (
    MessageFailed,
    MessageHandled,
    StopReason,
    TransportFailed,
    WorkerEvent,
    WorkerStarted,
    WorkerStopped,
    WorkerStopping,
)
from courier.heartbeat import DEFAULT_INTERVAL, attach_heartbeat, stop_order_since
from courier.pool import PoolOptions
from courier.worker import Worker, WorkerOptions

__all__ = ["consume"]


class Progress:
    """What the worker is doing, for the person watching it.

    The start line and the "stopped:" line are always printed; the progress
    line (handled, failed, retried, rate, what happened last) is one live
    line on a terminal, a plain line every few seconds elsewhere (logs, CI),
    and nothing with ``--no-progress``.
    """

    def __init__(self, cli: CliContext, *, live: bool = True, every: float = 2.0) -> None:
        self.console = cli.console
        self.show_progress = live
        self.live: Live | None = None
        self.every = every
        self.handled = 0
        self.failed = 0
        self.retried = 0
        self.started = time.monotonic()
        self.last_print = self.started
        self.last = ""

    def line(self) -> Text:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = Text()
        text.append(f"handled {self.handled}", style="green")
        text.append(" · ")
        text.append(f"failed {self.failed}", style="red" if self.failed else "dim")
        text.append(" · ")
        text.append(f"retried {self.retried}", style="yellow" if self.retried else "dim")
        text.append(f" · {self.handled / elapsed:,.1f}/s")
        if self.last:
            text.append(f" · {self.last}", style="dim")
        return text

    def __call__(self, event: WorkerEvent) -> None:
        if isinstance(event, WorkerStarted):
            queues = ", ".join(event.queues)
            self.console.print(f"[bold]courier[/] consuming {queues} (worker {event.worker_id})")
            if self.show_progress and self.console.is_terminal:
                self.live = Live(self.line(), console=self.console, refresh_per_second=4)
                self.live.start()
            return
        if isinstance(event, WorkerStopping):
            # From the signal handler: straight to the file descriptor, no locks.
            key = "Ctrl-C" if event.signal == signal.SIGINT else "the signal"
            os.write(
                2, f"\nstopping after the message in hand ({key} again to stop now)\n".encode()
            )
            return
        if isinstance(event, MessageHandled):
            self.handled += 1
            envelope = event.received.envelope
            self.last = envelope.type if envelope is not None else ""
        elif isinstance(event, MessageFailed):
            if event.will_retry:
                self.retried += 1
            else:
                self.failed += 1
            next_step = "retrying" if event.will_retry else event.outcome.value
            self.last = f"failed: {type(event.error).__name__} ({next_step})"
        elif isinstance(event, TransportFailed):
            self.last = f"{event.transport}: reconnecting in {event.retry_in:.1f}s"
        elif isinstance(event, WorkerStopped):
            self.handled, self.failed, self.retried = event.handled, event.failed, event.retried
            if self.live is not None:
                self.live.update(self.line())
                self.live.stop()
            else:
                self.console.print(self.line(), soft_wrap=True)
            self.console.print(f"stopped: {event.reason.value}")
            return
        if not self.show_progress:
            return
        if self.live is not None:
            self.live.update(self.line())
        elif time.monotonic() - self.last_print >= self.every:
            self.last_print = time.monotonic()
            self.console.print(self.line(), soft_wrap=True)


@click.command()
@click.argument("transports", nargs=-1, required=True)
@click.option(
    "--subscription",
    "subscriptions",
    multiple=True,
    help="Consume only this subscription's queue (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds.",
)
@click.option(
    "--memory-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop when resident memory exceeds this many MiB.",
)
@click.option(
    "--failure-limit",
    type=click.IntRange(min=1),
    help="Stop after this many handler failures (retried or failed for good).",
)
@click.option(
    "--sleep",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to wait for messages when the queues are empty.",
)
@click.option(
    "--stop-when-empty",
    is_flag=True,
    help="Stop once nothing is ready, in flight or delayed (waiting retries keep it running).",
)
@click.option(
    "--stop-when-idle",
    is_flag=True,
    help="Stop as soon as nothing is ready, even with retries still delayed.",
)
@click.option("--prefetch", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--no-setup", is_flag=True, help="Do not declare queues before consuming.")
@click.option(
    "--no-progress", is_flag=True, help="No live progress line (start and stop lines stay)."
)
@click.option("--id", "worker_id", help="The worker id in logs (default: host.pid).")
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_INTERVAL,
    show_default=True,
    help="Seconds between this worker's beats in the status store (courier workers).",
)
@pool_options
@metrics_options
@click.pass_obj
def consume(
    cli: CliContext,
    transports: tuple[str, ...],
    subscriptions: tuple[str, ...],
    limit: int | None,
    time_limit: float | None,
    memory_limit: float | None,
    failure_limit: int | None,
    sleep: float,
    stop_when_empty: bool,
    stop_when_idle: bool,
    prefetch: int,
    no_setup: bool,
    no_progress: bool,
    worker_id: str | None,
    heartbeat: float,
    processes: int | None,
    crash_limit: int,
    crash_window: float,
    metrics_port: int | None,
    metrics_host: str,
    statsd_address: str | None,
    statsd_prefix: str,
    pool_metrics: bool,
) -> None:
    """Consume TRANSPORTS (names from the configuration), most urgent first.

    Ctrl-C (or SIGTERM) stops after the message in hand, exit 0; a second
    one stops at once and gives that message back to the broker, exit 130.
    `courier stop-workers` stops it after the message in hand, exit 0.
    With --processes, the pool forwards both to its processes.
    """
    bus = cli.bus(need_app=True)
    check_transports(bus, transports)
    options = WorkerOptions(
        limit=limit,
        time_limit=time_limit,
        memory_limit=memory_limit,
        failure_limit=failure_limit,
        sleep=sleep,
        stop_when_empty=stop_when_empty,
        stop_when_idle=stop_when_idle,
        prefetch=prefetch,
    )
    metrics = MetricsChoice(
        metrics_port, metrics_host, statsd_address, statsd_prefix, pool_child=pool_metrics
    )
    if not no_setup:
        bus.setup(transports)
    if processes is not None:
        pool = PoolOptions(
            processes,
            base_id(worker_id),
            time_limit=time_limit,
            memory_limit=memory_limit,
            crash_limit=crash_limit,
            crash_window=crash_window,
            restart_clean_exits=not (stop_when_empty or stop_when_idle),
        )
        code = run_pool(
            cli,
            bus,
            transports,
            subscriptions,
            options=pool,
            metrics=metrics,
            should_stop=stop_order_since(bus, time.time()),
        )
        raise SystemExit(code)
    worker = Worker(
        bus, transports, subscriptions=subscriptions, options=options, worker_id=worker_id
    )
    cli.identify(worker.worker_id, worker.instance_id)
    worker.add_listener(Progress(cli, live=not no_progress))
    attach_heartbeat(bus, worker, heartbeat)
    with worker_metrics(cli, bus, transports, subscriptions, metrics) as listeners:
        for listener in listeners:
            worker.add_listener(listener)
        reason = worker.run()
    if reason is StopReason.FAILURE_LIMIT:
        raise SystemExit(exit_codes.FAILURE_LIMIT)
    if reason is StopReason.INTERRUPTED:
        raise SystemExit(exit_codes.INTERRUPTED)
