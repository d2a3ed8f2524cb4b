"""``courier consume``'s metrics options, and the listeners they add to a worker.

``--metrics-port`` serves Prometheus metrics over HTTP; ``--statsd`` sends
the same counts to a StatsD server. In a pool (``--processes``) the parent
serves the one endpoint and its children only record (the hidden
``--pool-metrics`` the pool gives them); see :mod:`courier.metrics`.

prometheus-client is imported only when metrics are asked for: every
other ``courier`` command starts without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.errors import ConfigurationError
from courier.transports.registry import open_transport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from courier.bus import Bus
    from courier.events import WorkerListener
    from courier.metrics.prometheus import MetricsServer
    from courier.metrics.statsd import StatsdListener
    from courier.transports.base import Transport

__all__ = ["MetricsChoice", "metrics_options", "queue_depth_sources", "worker_metrics"]

F = TypeVar("F", bound=Callable[..., object])


def metrics_options(command: F) -> F:
    """The metrics options, for ``consume``."""
    options = [
        click.option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            help="Serve Prometheus metrics on this port (/metrics); one endpoint for a pool.",
        ),
        click.option(
            "--metrics-host",
            default="127.0.0.1",
            show_default=True,
            help="The address the metrics endpoint listens on (0.0.0.0: every interface).",
        ),
        click.option(
            "--statsd",
            "statsd_address",
            metavar="HOST:PORT",
            help="Send counters and timings to this StatsD server (needs courier-bus[statsd]).",
        ),
        click.option(
            "--statsd-prefix",
            default="courier",
            show_default=True,
            help="Prefix of every StatsD name.",
        ),
        click.option("--pool-metrics", is_flag=True, hidden=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True, slots=True)
class MetricsChoice:
    """What the metrics options asked for."""

    port: int | None = None
    host: str = "127.0.0.1"
    statsd_address: str | None = None
    statsd_prefix: str = "courier"
    #: A pool's child: record for the parent's endpoint, serve nothing.
    pool_child: bool = False


def queue_depth_sources(
    bus: Bus, transports: Sequence[str], subscriptions: Sequence[str], stack: contextlib.ExitStack
) -> dict[str, tuple[Transport, list[str]]]:
    """The transports a scrape asks for queue depths, and their consumed queues.

    A durable transport gets a connection of its own (closed with ``stack``),
    so a scrape never waits on the worker's; memory and sync transports have
    none to open, and their own object is shared.
    """
    sources: dict[str, tuple[Transport, list[str]]] = {}
    for name in transports:
        transport = bus.transport(name)
        if transport.capabilities.in_process:
            continue
        dsn = bus.dsn(name)
        if dsn is not None and transport.capabilities.durable:
            transport = open_transport(dsn, name=name, serializer=bus.serializer)
            stack.callback(transport.close)
        sources[name] = (transport, bus.consumed_queues(name, subscriptions))
    return sources


@contextlib.contextmanager
def worker_metrics(
    cli: CliContext,
    bus: Bus,
    transports: Sequence[str],
    subscriptions: Sequence[str],
    choice: MetricsChoice,
) -> Iterator[list[WorkerListener]]:
    """The listeners ``choice`` asks for; the endpoint runs until the block ends."""
    from prometheus_client import CollectorRegistry

    from courier.metrics.multiprocess import ENV
    from courier.metrics.prometheus import PrometheusListener, register_queue_depths

    listeners: list[WorkerListener] = []
    with contextlib.ExitStack() as stack:
        if choice.pool_child:
            if not os.environ.get(ENV):
                raise ConfigurationError(f"--pool-metrics needs {ENV} (set by --processes)")
            listeners.append(PrometheusListener(CollectorRegistry()))
        elif choice.port is not None:
            registry = CollectorRegistry()
            listeners.append(PrometheusListener(registry))
            register_queue_depths(
                registry, queue_depth_sources(bus, transports, subscriptions, stack)
            )
            server = serve(registry, choice)
            stack.callback(server.close)
            cli.console.print(
                f"metrics on http://{choice.host}:{server.port}/metrics",
                markup=False,
                highlight=False,
            )
        if choice.statsd_address is not None:
            statsd = statsd_listener(choice)
            stack.callback(statsd.close)
            listeners.append(statsd)
        yield listeners


def serve(registry: CollectorRegistry, choice: MetricsChoice) -> MetricsServer:
    """The endpoint, or a usage error naming the port that could not be had."""
    from courier.metrics.prometheus import MetricsServer

    assert choice.port is not None
    try:
        return MetricsServer(registry, host=choice.host, port=choice.port)
    except OSError as error:
        raise fail(
            f"--metrics-port: cannot listen on {choice.host}:{choice.port} ({error.strerror})",
            exit_codes.USAGE,
        ) from None


def statsd_listener(choice: MetricsChoice) -> StatsdListener:
    assert choice.statsd_address is not None
    try:
        from courier.metrics.statsd import StatsdListener
    except ModuleNotFoundError as error:
        if error.name != "statsd":
            raise
        raise fail(
            '--statsd needs the statsd package (pip install "courier-bus[statsd]")',
            exit_codes.USAGE,
        ) from None
    try:
        return StatsdListener.to(choice.statsd_address, choice.statsd_prefix)
    except (ValueError, OSError) as error:
        raise fail(f"--statsd: {error}", exit_codes.USAGE) from None
