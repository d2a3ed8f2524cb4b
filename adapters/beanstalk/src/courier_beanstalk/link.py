"""The transport's one connection, and the generations it went through.

A transport opens its connection on first use and a new one, a new
generation, on the first call after it was lost. Each generation remembers
the id beanstalkd drew when it started: a job from an older generation of
the same server may still be deleted (it was handled; beanstalkd deletes a
ready job for anyone), but after a server restart old job ids name other
jobs, or none, and nothing is sent for them. A connection unused for a
second is checked (one non-blocking peek) before it is used, so a server
restart or a dropped idle connection costs a reconnect, not a failed
dispatch. ``current`` never connects:
the keepalive thread's touch and a shutdown's release use it, so they never
open a connection for a job that is gone with the old one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from courier.errors import ConnectionLost
from courier_beanstalk.connection import Connection
from courier_beanstalk.options import BeanstalkOptions

__all__ = ["Link"]

logger = logging.getLogger("courier.beanstalk")

#: Seconds unused after which a connection is checked before it is used.
IDLE_CHECK = 1.0


class Link:
    """Opens connections on demand; remembers which server each generation reached."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        options: BeanstalkOptions,
        mask: Callable[[str], str],
        on_connect: Callable[[Connection], None],
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._options = options
        self._mask = mask
        self._on_connect = on_connect
        self._connection: Connection | None = None
        self._generations = 0
        #: The server id each generation talked to (the last thousand).
        self._servers: dict[int, str] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def current(self) -> Connection | None:
        """The connection if it is alive; never opens one."""
        connection = self._connection
        return connection if connection is not None and connection.lost is None else None

    def live(self) -> Connection:
        """The current connection, or a new one (a new generation) if it was lost."""
        connection = self._connection
        if (
            connection is not None
            and connection.lost is None
            and not connection.closed_while_idle(IDLE_CHECK)
        ):
            return connection
        with self._lock:
            connection = self._connection
            if connection is not None and connection.lost is None:
                return connection
            if self._closed:
                raise ConnectionLost(f"transport {self.name!r} is closed")
            if connection is not None:
                logger.warning(
                    "transport %r lost its connection to beanstalkd (%s); reconnecting",
                    self.name,
                    connection.lost,
                )
                connection.close()
                self._connection = None
            generation = self._generations + 1
            options = self._options
            connection = Connection(
                self._host,
                self._port,
                generation=generation,
                connect_timeout=options.connect_timeout,
                io_timeout=options.io_timeout,
                poll_interval=options.poll_interval,
                mask=self._mask,
            )
            previous = self._servers.get(self._generations)
            if previous is not None and previous != connection.server_id:
                logger.warning(
                    "beanstalkd at %s restarted: jobs held on the old connection are not "
                    "acknowledged there (their ids mean nothing to the new server)",
                    connection.address,
                )
            self._generations = generation
            self._servers[generation] = connection.server_id
            self._servers.pop(generation - 1000, None)
            self._on_connect(connection)
            self._connection = connection
            return connection

    def same_server(self, generation: int, connection: Connection) -> bool:
        """Whether ``generation`` talked to the server ``connection`` talks to."""
        return self._servers.get(generation) == connection.server_id

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
