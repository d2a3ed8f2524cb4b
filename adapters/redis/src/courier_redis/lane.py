"""The worker's own connection: acknowledgements sent without waiting for their reply.

A worker acknowledges every few messages and reads every hundred (the
read-ahead). Waiting for each acknowledgement's reply would cost a round
trip per flush, as many as the messages handled in between. So, on a
single Redis server, a transport keeps one connection of the pool for
itself: ``fire`` writes the acknowledging script to it and returns, and
``call`` (the next XREADGROUP) first reads the replies of what was fired,
then sends its own command. Redis executes an acknowledgement as soon as it
arrives, as RabbitMQ does ``basic.ack``, which has no reply at all.

What was fired is kept until its reply is read. When the connection turns
out to be gone (a reply cannot be read, a write fails, or the socket shows
an end before a command is sent), everything fired and unanswered is sent
again, and waited for, on a new connection: acknowledging twice is
harmless, so an acknowledgement made before a reconnect still goes through
after it. Only a process that dies with acknowledgements it never wrote
loses them, and those messages come again. A script Redis no longer knows
(it restarted) answers NOSCRIPT and is run again, loaded.

The connection never runs redis-py's health check, whose PING would read a
reply meant for something fired. One lock keeps other threads off it; a
thread that finds it busy uses the pool instead.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from courier_redis.connection import Script

__all__ = ["Lane"]

logger = logging.getLogger("courier.redis")

_LOST = (RedisConnectionError, RedisTimeoutError, socket.timeout, OSError)

#: A fired script: what to send again if its reply never comes.
_Fired = tuple["Script", tuple[Any, ...]]


class Lane:
    """One pooled connection held by a transport, for pipelined round trips."""

    def __init__(self, client: Any) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None
        #: Sent on the current connection, reply not read yet.
        self._fired: list[_Fired] = []
        #: Fired on a connection that died: run again before anything else.
        self._owed: list[_Fired] = []
        self.lock = threading.Lock()

    def _live(self) -> Any:
        if self._connection is None:
            # The pool hands out a connection only after checking it has no end pending.
            self._connection = self._pool.get_connection()
        return self._connection

    def fire(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Send ``script`` and return at once; its reply is read later."""
        fired = (script, (len(keys), *keys, *args))
        try:
            self._settle_owed()
            connection = self._checked()
            connection.send_command("EVALSHA", script.sha, *fired[1], check_health=False)
        except _LOST:
            self._owed.append(fired)
            self._replay()
            return
        self._fired.append(fired)

    def call(self, *args: Any) -> Any:
        """One command and its reply; the replies of what was fired are read on the way.

        The command is written before those replies are read, so a fired
        acknowledgement and the read after it share one round trip.
        """
        try:
            self._settle_owed()
            connection = self._live()
            connection.send_command(*args, check_health=False)
            self._collect()
            reply = connection.read_response()
        except _LOST:
            self._replay()
        except ResponseError:
            raise  # answered: the connection is in step
        except BaseException:
            self._drop()  # interrupted half way: the connection is out of step
            raise
        else:
            if self._owed:  # scripts Redis had forgotten: run them, loaded, now
                with contextlib.suppress(*_LOST):
                    self._settle_owed()
            return reply
        # The old connection died under the command: once more on the new one.
        connection = self._live()
        try:
            connection.send_command(*args, check_health=False)
            return connection.read_response()
        except BaseException:
            self._drop()
            raise

    def drain(self) -> None:
        """Read the reply of everything fired (blocking until they are in)."""
        if self._fired:
            self._collect()
        self._settle_owed()

    def _collect(self) -> None:
        """Read the reply of everything fired; what Redis did not know (NOSCRIPT) is owed."""
        connection = self._live()
        while self._fired:
            fired = self._fired[0]
            try:
                connection.read_response()
            except NoScriptError:
                self._owed.append(fired)  # run again, loaded, before the next command
            except ResponseError as error:  # answered, with an error retrying cannot fix
                logger.warning("%s failed on Redis: %s", fired[0].name, error)
            del self._fired[0]

    def close(self) -> None:
        """Settle what was fired, and give the connection back to the pool."""
        try:
            if self._owed or self._fired:
                try:
                    self.drain()
                except _LOST:
                    self._replay()
        finally:
            connection, self._connection = self._connection, None
            if connection is not None:
                self._pool.release(connection)

    # -- helpers -------------------------------------------------------------

    def _checked(self) -> Any:
        """The connection, after reading any reply already in (which shows an end too)."""
        connection = self._live()
        if connection.can_read(timeout=0):
            if not self._fired:
                raise RedisConnectionError("unexpected data on an idle connection")
            self._collect()
            self._settle_owed()
            connection = self._live()
        return connection

    def _run(self, connection: Any, script: Script, arguments: tuple[Any, ...]) -> Any:
        try:
            connection.send_command("EVALSHA", script.sha, *arguments, check_health=False)
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", script.source, check_health=False)
            connection.read_response()
            connection.send_command("EVALSHA", script.sha, *arguments, check_health=False)
            return connection.read_response()

    def _settle_owed(self) -> None:
        if self._owed:
            self._replay()

    def _replay(self) -> None:
        """A new connection, and everything unanswered run on it, one by one.

        If that fails too the error propagates and what is unanswered stays
        owed, for the next attempt.
        """
        self._drop()
        connection = self._live()
        try:
            while self._owed:
                script, arguments = self._owed[0]
                self._run(connection, script, arguments)
                del self._owed[0]
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        """Forget the connection; what was fired on it and unanswered is owed."""
        self._owed[:0] = self._fired
        self._fired = []
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._pool.release(connection)
