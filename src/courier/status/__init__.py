"""Where the workers of a bus keep what the others must be able to read."""

from courier.errors import ConfigurationError
from courier.status.base import StatusStore
from courier.status.memory import MemoryStatusStore
from courier.status.sqlite import SqliteStatusStore
from courier.transports.dsn import Dsn

__all__ = [
    "MemoryStatusStore",
    "SqliteStatusStore",
    "StatusStore",
    "check_status_dsn",
    "open_status_store",
]


#: The schemes a status store can be opened from.
SCHEMES = ("sqlite", "memory")


def check_status_dsn(dsn: str) -> Dsn:
    """``dsn`` parsed, or ConfigurationError if no status store can live there."""
    parsed = Dsn.parse(dsn)
    if parsed.scheme not in SCHEMES:
        raise ConfigurationError(
            f"{parsed.scheme}:// cannot keep worker status; use sqlite:// or memory://"
        )
    return parsed


def open_status_store(dsn: str) -> StatusStore:
    """The status store a DSN names: ``sqlite:///courier.db`` or ``memory://``."""
    parsed = check_status_dsn(dsn)
    if parsed.scheme == "memory":
        return MemoryStatusStore()
    from courier.transports.sqlite import database_path

    return SqliteStatusStore(database_path(parsed))
