"""``courier consume``: run a worker on one or more transports."""

from __future__ import annotations

import time

import click
from rich.live import Live
from rich.text import Text

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.events import (
    MessageFailed,
    MessageHandled,
    StopReason,
    TransportFailed,
    WorkerEvent,
    WorkerStarted,
    WorkerStopped,
)
from courier.worker import Worker, WorkerOptions

__all__ = ["consume"]


class Progress:
    """The progress line: handled, failed, rate, and what happened last.

    On a terminal it is one live line; elsewhere (logs, CI) a plain line
    every few seconds and a summary at the end, so progress stays visible.
    """

    def __init__(self, cli: CliContext, every: float = 2.0) -> None:
        self.console = cli.console
        self.live: Live | None = None
        self.every = every
        self.handled = 0
        self.failed = 0
        self.started = time.monotonic()
        self.last_print = self.started
        self.last = ""

    def line(self) -> Text:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = Text()
        text.append(f"handled {self.handled}", style="green")
        text.append(" · ")
        text.append(f"failed {self.failed}", style="red" if self.failed else "dim")
        text.append(f" · {self.handled / elapsed:,.1f}/s")
        if self.last:
            text.append(f" · {self.last}", style="dim")
        return text

    def __call__(self, event: WorkerEvent) -> None:
        if isinstance(event, WorkerStarted):
            queues = ", ".join(event.queues)
            self.console.print(f"[bold]courier[/] consuming {queues} (worker {event.worker_id})")
            if self.console.is_terminal:
                self.live = Live(self.line(), console=self.console, refresh_per_second=4)
                self.live.start()
            return
        if isinstance(event, MessageHandled):
            self.handled += 1
            envelope = event.received.envelope
            self.last = envelope.type if envelope is not None else ""
        elif isinstance(event, MessageFailed):
            self.handled += 1
            self.failed += 1
            next_step = "retrying" if event.will_retry else event.outcome.value
            self.last = f"failed: {type(event.error).__name__} ({next_step})"
        elif isinstance(event, TransportFailed):
            self.last = f"{event.transport}: reconnecting in {event.retry_in:.1f}s"
        elif isinstance(event, WorkerStopped):
            if self.live is not None:
                self.live.update(self.line())
                self.live.stop()
            else:
                self.console.print(self.line())
            self.console.print(f"stopped: {event.reason.value}")
            return
        if self.live is not None:
            self.live.update(self.line())
        elif time.monotonic() - self.last_print >= self.every:
            self.last_print = time.monotonic()
            self.console.print(self.line())


@click.command()
@click.argument("transports", nargs=-1, required=True)
@click.option(
    "--subscription",
    "subscriptions",
    multiple=True,
    help="Consume only this subscription's queue (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), help="Stop after S.")
@click.option(
    "--memory-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop when resident memory exceeds MB.",
)
@click.option("--failure-limit", type=click.IntRange(min=1), help="Stop after N failures.")
@click.option(
    "--sleep",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds to wait for messages when the queues are empty.",
)
@click.option("--stop-when-empty", is_flag=True, help="Stop when no message is waiting.")
@click.option("--prefetch", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--no-setup", is_flag=True, help="Do not declare queues before consuming.")
@click.option("--no-progress", is_flag=True, help="No progress line.")
@click.option("--id", "worker_id", help="The worker id in logs (default: host.pid).")
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
    prefetch: int,
    no_setup: bool,
    no_progress: bool,
    worker_id: str | None,
) -> None:
    """Consume TRANSPORTS (names from the configuration), most urgent first.

    Stops after the message in hand on SIGTERM, SIGINT or SIGQUIT; exit 0.
    """
    bus = cli.bus(need_app=True)
    for name in transports:
        if name not in bus.transports:
            known = ", ".join(sorted(bus.transports)) or "none"
            raise fail(f"unknown transport {name!r} (configured: {known})", exit_codes.NOT_FOUND)
    options = WorkerOptions(
        limit=limit,
        time_limit=time_limit,
        memory_limit=memory_limit,
        failure_limit=failure_limit,
        sleep=sleep,
        stop_when_empty=stop_when_empty,
        prefetch=prefetch,
    )
    if not no_setup:
        bus.setup(transports)
    worker = Worker(
        bus, transports, subscriptions=subscriptions, options=options, worker_id=worker_id
    )
    cli.identify(worker.worker_id, worker.instance_id)
    if not no_progress:
        worker.add_listener(Progress(cli))
    reason = worker.run()
    if reason is StopReason.FAILURE_LIMIT:
        raise SystemExit(exit_codes.FAILURE_LIMIT)
