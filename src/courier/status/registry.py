"""DSN scheme -> status store, from the entry-point group ``courier.status_stores``.

SQLite and memory are built in; an adapter that can keep worker status on
its broker (``courier-bus-redis``) registers a factory, called as
``factory(dsn)``, under each of its schemes. So the status store of a bus
whose workers run on several hosts can live where they all reach.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Protocol

from courier.errors import ConfigurationError
from courier.transports.dsn import Dsn

if TYPE_CHECKING:
    from courier.status.base import StatusStore

__all__ = ["GROUP", "StatusStoreFactory", "check_status_dsn", "open_status_store"]

GROUP = "courier.status_stores"

#: The package a well-known scheme needs when no installed one registers it.
_PACKAGES = {
    "redis": "redis",
    "rediss": "redis",
    "redis+unix": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
}

_BUILTIN = {
    "sqlite": "courier.status.sqlite:SqliteStatusStore.from_dsn",
    "memory": "courier.status.memory:MemoryStatusStore.from_dsn",
}


class StatusStoreFactory(Protocol):
    def __call__(self, dsn: Dsn, /) -> StatusStore: ...


_loaded: dict[str, str] | None = None
_lock = threading.Lock()


def _targets() -> dict[str, str]:
    """Every scheme and the ``module:attribute`` of its factory; entry points read once."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = {point.name.lower(): point.value for point in entry_points(group=GROUP)}
    return {**_loaded, **_BUILTIN}


def check_status_dsn(dsn: str | Dsn) -> Dsn:
    """``dsn`` parsed, or ConfigurationError if no installed status store can live there."""
    parsed = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
    if parsed.scheme in _targets():
        return parsed
    package = _PACKAGES.get(parsed.scheme)
    if package is not None:
        raise ConfigurationError(
            f"a status store on {parsed.scheme}:// needs the courier-bus-{package} package "
            f'(pip install "courier-bus[{package}]")'
        )
    known = ", ".join(f"{scheme}://" for scheme in sorted(_targets()))
    raise ConfigurationError(f"{parsed.scheme}:// cannot keep worker status; use {known}")


def open_status_store(dsn: str | Dsn) -> StatusStore:
    """The status store a DSN names: ``sqlite:///courier.db``, ``memory://``, ``redis://...``."""
    parsed = check_status_dsn(dsn)
    target = _targets()[parsed.scheme]
    try:
        point = EntryPoint(name=parsed.scheme, value=target, group=GROUP)
        factory: StatusStoreFactory = point.load()
    except ImportError as error:
        raise ConfigurationError(
            f"the status store for {parsed.scheme}:// could not be loaded: {error}"
        ) from None
    return factory(parsed)
