"""``courier consume --processes N``: the pool's options and its wiring to the CLI.

The supervising is :mod:`courier.pool`'s; this module turns the command
line the operator typed into the children's command line, and starts the
one metrics endpoint a pool shares (:mod:`courier.metrics.multiprocess`).

A child runs the same ``courier consume`` as its parent, rebuilt from what
click parsed rather than from ``sys.argv`` (which is not the command's
when courier runs inside another program), option by option, so an option
added to ``consume`` reaches the children without this module knowing it.
Only the options the pool itself acts on are left out or replaced: the
process count, ``--id``, the jittered limits, the metrics endpoint. The
parent declares the queues once, so the children get ``--no-setup``, and
``--no-progress``, since N live progress lines on one terminal would be
noise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.cli.observe import MetricsChoice, queue_depth_sources
from courier.pool import Pool, PoolOptions

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.metrics.multiprocess import PoolMetrics

__all__ = ["child_command", "pool_options", "run_pool"]

F = TypeVar("F", bound=Callable[..., object])

#: ``consume``'s parameters the pool acts on, rather than passing them on as given.
POOL_ONLY = frozenset(
    {
        "processes",
        "crash_limit",
        "crash_window",
        "worker_id",
        "time_limit",
        "memory_limit",
        "metrics_port",
        "metrics_host",
        "pool_metrics",
        "no_setup",
        "no_progress",
    }
)


def pool_options(command: F) -> F:
    """``--processes`` and its crash-loop limit, for ``consume``."""
    options = [
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            help="Run N worker processes, restarting any that stop (ids <--id or host>.1..N).",
        ),
        click.option(
            "--crash-limit",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="With --processes: stop the pool (exit 7) when one process fails this often...",
        ),
        click.option(
            "--crash-window",
            type=click.FloatRange(min=0, min_open=True),
            default=60.0,
            show_default=True,
            help="...within this many seconds.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def child_command(ctx: click.Context, cli: CliContext, *, pool_metrics: bool) -> list[str]:
    """The command line of every child, without ``--id`` and the limits the pool adds."""
    args = [sys.executable, "-m", "courier"]
    if cli.config is not None:
        args += ["--config", str(Path(cli.config).resolve())]
    if cli.app is not None:
        args += ["--app", cli.app]
    if cli.verbosity:
        args.append("-" + "v" * cli.verbosity)
    args.append(ctx.info_name or "consume")
    for param in ctx.command.params:
        name = param.name
        if name is None or name in POOL_ONLY or name not in ctx.params:
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            args += _values(value)
        elif isinstance(param, click.Option) and ctx.get_parameter_source(name) in (
            ParameterSource.COMMANDLINE,
            ParameterSource.PROMPT,
        ):
            args += _render(param, value)
    args += ["--no-setup", "--no-progress"]
    if pool_metrics:
        args.append("--pool-metrics")
    return args


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, tuple | list):
        return [str(item) for item in value]
    return [str(value)]


def _render(option: click.Option, value: Any) -> list[str]:
    """One parsed option back as the arguments that give it."""
    flag = option.opts[0]
    if value is None:
        return []
    if option.count:
        return [flag] * int(value)
    if option.is_flag:
        if option.is_bool_flag:
            return [flag] if value else option.secondary_opts[:1]
        return [flag] if value == option.flag_value else []
    if option.multiple:
        return [part for item in value for part in (flag, *_values(item))]
    return [flag, *_values(value)]


def run_pool(
    cli: CliContext,
    bus: Bus,
    transports: Sequence[str],
    subscriptions: Sequence[str],
    *,
    options: PoolOptions,
    metrics: MetricsChoice,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run the pool for the current ``consume`` command; its exit code."""
    for name in transports:
        if not bus.transport(name).capabilities.durable:
            raise fail(
                f"--processes: transport {name!r} lives in one process's memory; "
                "a pool's processes would not share it",
                exit_codes.USAGE,
            )
    ctx = click.get_current_context()
    serving = metrics.port is not None
    command = child_command(ctx, cli, pool_metrics=serving)
    env = dict(os.environ)
    on_exit: Callable[[int], None] | None = None
    with contextlib.ExitStack() as stack:
        if serving:
            from courier.metrics.prometheus import register_queue_depths

            shared = _pool_metrics(metrics)
            stack.callback(shared.close)
            register_queue_depths(
                shared.registry, queue_depth_sources(bus, transports, subscriptions, stack)
            )
            env.update(shared.env)
            on_exit = shared.child_exited
            cli.console.print(
                f"metrics on http://{metrics.host}:{shared.server.port}/metrics",
                markup=False,
                highlight=False,
            )
        pool = Pool(
            command,
            options,
            env=env,
            should_stop=should_stop,
            on_exit=on_exit,
            say=lambda line: click.echo(line, err=True),
        )
        return pool.run()


def _pool_metrics(metrics: MetricsChoice) -> PoolMetrics:
    from courier.metrics.multiprocess import PoolMetrics

    assert metrics.port is not None
    try:
        return PoolMetrics(host=metrics.host, port=metrics.port)
    except OSError as error:
        raise fail(
            f"--metrics-port: cannot listen on {metrics.host}:{metrics.port} ({error.strerror})",
            exit_codes.USAGE,
        ) from None


def base_id(worker_id: str | None) -> str:
    """The children's ids start with ``--id``, or the host's name."""
    return worker_id or socket.gethostname()
