"""Where the workers of a bus keep what the others must be able to read."""

from courier.errors import ConfigurationError
from courier.status.base import StatusStore
from courier.status.memory import MemoryStatusStore
from courier.status.sqlite import SqliteStatusStore
from courier.transports.dsn import Dsn

__all__ = ["MemoryStatusStore", "SqliteStatusStore", "StatusStore", "open_status_store"]


def open_status_store(dsn: str) -> StatusStore:
    """The status store a DSN names: ``sqlite:///courier.db`` or ``memory://``."""
    parsed = Dsn.parse(dsn)
    if parsed.scheme == "memory":
        return MemoryStatusStore()
    if parsed.scheme == "sqlite":
        from courier.transports.sqlite import database_path

        return SqliteStatusStore(database_path(parsed))
    raise ConfigurationError(
        f"status_store: {parsed.scheme}:// cannot keep worker status; use sqlite:// or memory://"
    )
