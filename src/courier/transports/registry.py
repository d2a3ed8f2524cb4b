"""DSN scheme -> transport factory, from the entry-point group ``courier.transports``.

Adapters are separate distributions (``courier-bus-amqp``, ...) that register
their factory under their scheme, so installing one is all it takes to use
its DSNs. A factory is called as ``factory(dsn, name=..., serializer=...)``.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from courier.errors import ConfigurationError
from courier.transports.dsn import Dsn

if TYPE_CHECKING:
    from courier.serializer import Serializer
    from courier.transports.base import Transport

__all__ = ["GROUP", "TransportFactory", "factories", "open_transport", "register"]

GROUP = "courier.transports"

#: The adapter (the extra of ``courier-bus``) a scheme needs when it is not installed.
_ADAPTERS = {
    "amqp": "amqp",
    "amqps": "amqp",
    "redis": "redis",
    "rediss": "redis",
    "redis+unix": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
    "sqs": "sqs",
    "stomp": "stomp",
    "stomp+ssl": "stomp",
    "beanstalk": "beanstalk",
    "beanstalkd": "beanstalk",
}


class TransportFactory(Protocol):
    def __call__(self, dsn: Dsn, *, name: str, serializer: Serializer) -> Transport: ...


_registered: dict[str, TransportFactory] = {}
_loaded: dict[str, TransportFactory] | None = None
_lock = threading.Lock()


def register(scheme: str, factory: TransportFactory) -> None:
    """Register a factory in code (tests, or transports shipped inside an app)."""
    _registered[scheme.lower()] = factory


def factories() -> dict[str, TransportFactory]:
    """Every known scheme and its factory; entry points are loaded once."""
    global _loaded
    with _lock:
        if _loaded is None:
            loaded: dict[str, TransportFactory] = {}
            for point in entry_points(group=GROUP):
                loaded[point.name.lower()] = _lazy(point.name, point.value)
            _loaded = loaded
    return {**_builtin(), **_loaded, **_registered}


def _builtin() -> dict[str, TransportFactory]:
    # The embedded transports work even when courier runs from a source tree
    # whose entry points were never installed.
    return {
        "memory": _lazy("memory", "courier.transports.memory:MemoryTransport.from_dsn"),
        "sync": _lazy("sync", "courier.transports.sync:SyncTransport.from_dsn"),
        "sqlite": _lazy("sqlite", "courier.transports.sqlite:SqliteTransport.from_dsn"),
    }


def _lazy(scheme: str, target: str) -> TransportFactory:
    """A factory that imports its module on first use, with a clear error if it cannot."""

    def factory(dsn: Dsn, *, name: str, serializer: Serializer) -> Transport:
        from importlib.metadata import EntryPoint

        try:
            real = EntryPoint(name=scheme, value=target, group=GROUP).load()
        except ImportError as error:
            raise ConfigurationError(
                f"the transport for {scheme}:// could not be loaded: {error}"
            ) from None
        transport: Transport = real(dsn, name=name, serializer=serializer)
        return transport

    return factory


def open_transport(dsn: str | Dsn, *, name: str, serializer: Serializer) -> Transport:
    """Open the transport a DSN names; raises ConfigurationError for unknown schemes."""
    parsed = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
    factory = factories().get(parsed.scheme)
    if factory is None:
        extra = _ADAPTERS.get(parsed.scheme)
        if extra:
            raise ConfigurationError(
                f"transport {name!r}: {parsed.scheme}:// needs the courier-bus-{extra} package "
                f'(pip install "courier-bus[{extra}]")'
            )
        known = ", ".join(sorted(factories()))
        raise ConfigurationError(
            f"transport {name!r}: no transport for scheme {parsed.scheme!r} (known: {known})"
        )
    return factory(parsed, name=name, serializer=serializer)
