"""``courier health``: exit 0 when the workers keep up, 8 with one line why not.

What a cron job, a monitoring check or a Kubernetes probe runs. Unhealthy is:

- messages are ready on a queue (not paused) and no worker of this
  configuration moved a counter within ``--stalled-after`` seconds: none
  running, all dead, or all stuck in a handler;
- with ``--max-failed N``: more than N messages reached the failure store
  since ``--since`` (``10m``, ``1h``, or an ISO time; default: ever).

A broker that cannot be asked for its counts is reported on stderr but is
not unhealthy by itself: a probe should not restart healthy workers because
``stats`` timed out once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext
from courier.cli.failure_store import load, open_stores
from courier.cli.output import Duration, escape, plural, say
from courier.cli.stats import pick_transports, queues_of
from courier.cli.worker_status import STALLED_AFTER, consumed, open_board, ready_counts, rows
from courier.transports.sqlite_connection import NoDatabase

__all__ = ["command", "parse_since"]


def parse_since(text: str, now: float) -> float:
    """A Unix time from ``10m``/``1h`` (that long ago) or an ISO 8601 time (UTC if naive)."""
    try:
        return now - Duration().convert(text, None, None)
    except click.BadParameter:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text[:40]!r} is neither a duration (10m, 1h) nor an ISO time", param_hint="--since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@click.command("health")
@click.option(
    "--stalled-after",
    type=Duration(),
    default=STALLED_AFTER,
    show_default=True,
    help="Unhealthy if messages are ready and no worker made progress for this long.",
)
@click.option(
    "--max-failed",
    type=click.IntRange(min=0),
    help="Unhealthy if more than this many messages failed for good since --since.",
)
@click.option("--since", help="For --max-failed: 10m, 1h, ... ago, or an ISO time (default: ever).")
@click.pass_obj
def command(
    cli: CliContext, stalled_after: float, max_failed: int | None, since: str | None
) -> None:
    """Exit 0 if the workers keep up; 8 and one line why if they do not."""
    now = time.time()
    start = parse_since(since, now) if since is not None else None
    bus, store = open_board(cli, read_only=True)
    statuses = rows(store, now)
    live = [status for status in statuses if not status.is_dead(now)]
    try:
        paused = store.paused()
    except NoDatabase:
        paused = frozenset()
    wanted = consumed(statuses)
    if not wanted:
        stores = {bus.failure_transport, bus.invalid_transport}
        wanted = {
            name: set(queues_of(bus, name))
            for name in pick_transports(bus, ())
            if name not in stores
        }
    ready = ready_counts(bus, wanted)
    for error in ready.errors:
        click.echo(f"note: could not count ready messages ({escape(error)})", err=True)
    waiting = ready.waiting(paused)
    moving = [s for s in live if now - s.progressed_at() <= stalled_after]
    if waiting and not moving:
        shown = ", ".join(waiting[:3]) + (", ..." if len(waiting) > 3 else "")
        _unhealthy(
            cli,
            f"no worker made progress in {stalled_after:g}s ({plural(len(live), 'live worker')})"
            f" while messages wait: {shown}",
        )
    if max_failed is not None:
        failed = _failed_since(cli, start)
        if failed > max_failed:
            when = "ever" if since is None else f"since {since}"
            _unhealthy(cli, f"{plural(failed, 'message')} failed {when} (more than {max_failed})")
    say(
        cli.console,
        f"healthy: {plural(len(live), 'live worker')}, "
        f"{plural(ready.total(paused), 'message')} ready",
    )


def _failed_since(cli: CliContext, start: float | None) -> int:
    bus = cli.bus(read_only=True)
    try:
        items = load(open_stores(bus))
    except NoDatabase:
        return 0
    return sum(1 for item in items if start is None or item.failed_at >= start)


def _unhealthy(cli: CliContext, why: str) -> None:
    say(cli.console, f"unhealthy: {escape(why)}")
    raise SystemExit(exit_codes.UNHEALTHY)
