"""Every redis-py detail: building the client, routing in a cluster, errors, scripts.

One :class:`Link` per transport holds a redis-py client: ``redis.Redis``
for ``redis://``, ``rediss://`` and ``redis+unix://``, ``RedisCluster`` for
the ``+cluster`` schemes. Both are thread-safe (a connection pool; each
command borrows a connection), which is what lets the worker's keepalive
thread ``renew`` while the worker thread waits in a blocking XREADGROUP on
another connection. The client reconnects by itself on the next command
after a connection dies; courier only has to report the loss.

Quirks handled here:

- redis-py works out a cluster command's slot by asking the server
  (``COMMAND GETKEYS``) for commands whose keys move, as XREADGROUP's do:
  a round trip per read. :meth:`Link.on_node_of` names the node itself.
- redis-py's cluster pipelines cannot run scripts; scripts go one call each
  (EVALSHA, loading the script on NOSCRIPT, on every node of a cluster).
- On a single server, the worker's reads and acknowledgements go through
  the transport's own connection (:mod:`courier_redis.lane`): an
  acknowledgement does not wait for its reply.
- redis-py builds a dict per stream entry; the single server's client
  returns XREADGROUP's reply as sent, and wire.py reads the flat lists.
- Errors: connection errors and timeouts become ``ConnectionLost``, anything
  else the server answers becomes ``TransportError`` (``PublishNotConfirmed``
  on the sending side), with their text masked by the DSN: a password never
  travels up in an exception.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

from courier.errors import ConfigurationError, ConnectionLost, PublishNotConfirmed, TransportError
from courier.transports.dsn import Dsn
from courier_redis.lane import Lane
from courier_redis.options import RedisOptions

__all__ = ["Client", "Link", "client_parameters", "default_consumer"]

logger = logging.getLogger("courier.redis")

Client: TypeAlias = "redis.Redis | RedisCluster"

#: Errors after which the connection is gone and the next call makes a new one.
#: How redis-py words a connection that could not be made.
_CONNECT_FAILED = re.compile(r"connecting to (?P<where>\S+?)\.?(?:\s|$)(?P<reason>.*)", re.DOTALL)

_LOST = (RedisConnectionError, RedisTimeoutError, socket.timeout, OSError)

CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
TLS_SCHEMES = frozenset({"rediss", "rediss+cluster"})


def default_consumer() -> str:
    """``<host>.<pid>``: the worker's default id."""
    return f"{socket.gethostname()}.{os.getpid()}"


def _database(dsn: Dsn, options: RedisOptions) -> int:
    if dsn.scheme == "redis+unix":
        return options.db or 0
    path = dsn.path.strip("/")
    if options.db is not None:
        raise ConfigurationError(
            f"the {dsn.scheme}:// DSN gives the database as its path (/0), not as db="
        )
    if not path:
        return 0
    if not path.isdigit():
        raise ConfigurationError(
            f"the {dsn.scheme}:// DSN's path is the database index, a number: not {path[:20]!r}"
        )
    return int(path)


def client_parameters(dsn: Dsn, options: RedisOptions, client_name: str) -> dict[str, Any]:
    """The keyword arguments of the redis-py client a DSN describes."""
    scheme = dsn.scheme
    params: dict[str, Any] = {
        "username": dsn.username or None,
        "password": dsn.password,
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": options.health_check_interval,
        "client_name": client_name,
        # One quiet retry covers a pooled connection the server closed while
        # idle; anything worse is the worker's to back off from.
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": False,
    }
    database = _database(dsn, options)
    if scheme in CLUSTER_SCHEMES:
        if database != 0:
            raise ConfigurationError("a Redis Cluster has only database 0")
        hosts = dsn.hosts or ((dsn.host or "localhost", dsn.port),)
        params["startup_nodes"] = [
            ClusterNode(host, port or 6379)  # type: ignore[no-untyped-call]
            for host, port in hosts
        ]
    elif scheme == "redis+unix":
        if dsn.host or not dsn.path:
            raise ConfigurationError(
                "a redis+unix DSN names the socket as its path: redis+unix:///run/redis.sock"
            )
        params["unix_socket_path"] = dsn.path
        params["db"] = database
    else:
        if len(dsn.hosts) > 1:
            raise ConfigurationError(
                f"{scheme}:// takes one host; for several seed nodes use {scheme}+cluster://"
            )
        params["host"] = dsn.host or "localhost"
        params["port"] = dsn.port or 6379
        params["db"] = database
    tls_options = {
        name
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_key_password")
        if getattr(options, name) is not None
    }
    if "tls_verify" in options.model_fields_set:
        tls_options.add("tls_verify")
    if scheme in TLS_SCHEMES:
        params.update(_tls(options))
    elif tls_options:
        raise ConfigurationError(
            f"{', '.join(sorted(tls_options))} only apply to rediss:// DSNs (TLS)"
        )
    return params


def _tls(options: RedisOptions) -> dict[str, Any]:
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(options, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"TLS: {name} {path[:200]!r} is not a readable file")
    if (options.tls_cert_file is None) != (options.tls_key_file is None):
        raise ConfigurationError("TLS: tls_cert_file and tls_key_file go together")
    password = options.tls_key_password
    return {
        "ssl": True,
        "ssl_cert_reqs": "required" if options.tls_verify else "none",
        "ssl_check_hostname": options.tls_verify,
        "ssl_ca_certs": options.tls_ca_file,
        "ssl_certfile": options.tls_cert_file,
        "ssl_keyfile": options.tls_key_file,
        "ssl_password": password.get_secret_value() if password is not None else None,
    }


class Script:
    """A Lua script run by EVALSHA, loaded on NOSCRIPT."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class Link:
    """A redis-py client made on first use, with courier's error translation."""

    def __init__(
        self,
        dsn: Dsn,
        options: RedisOptions,
        *,
        name: str,
        on_lost: Callable[[], None],
    ) -> None:
        self.dsn = dsn
        self.options = options
        self.name = name
        self.cluster = dsn.scheme in CLUSTER_SCHEMES
        self._on_lost = on_lost
        self._client: Client | None = None
        self._lane: Lane | None = None
        # Built now, so a bad DSN fails when the transport is made, not later.
        self.parameters = client_parameters(dsn, options, "courier")

    def name_clients(self, client_name: str) -> None:
        """``CLIENT SETNAME`` for every connection made from now on."""
        name = "".join(c if c.isprintable() and not c.isspace() else "-" for c in client_name)
        self.parameters["client_name"] = name[:200]
        if self._client is not None and self._lane is None:
            # Connected already (setup before the worker started): a new client, new names.
            self.close()

    @property
    def client(self) -> Client:
        client = self._client
        if client is None:
            try:
                if self.cluster:
                    client = RedisCluster(**self.parameters)
                else:
                    client = redis.Redis(**self.parameters)
                    # Entries as Redis sends them (flat field lists): wire.py reads
                    # them without the dict per entry redis-py would build.
                    client.set_response_callback("XREADGROUP", _as_sent)
            except (RedisError, RedisClusterException, *_LOST) as error:
                self._on_lost()
                raise ConnectionLost(self._say("connecting", error)) from None
            self._client = client
        return client

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def lane(self) -> Lane | None:
        """The transport's own connection for pipelined round trips (single server only)."""
        if self.cluster:
            return None
        lane = self._lane
        if lane is None:
            lane = self._lane = Lane(self.client)
        return lane

    def settle(self, *, wait: bool = True) -> None:
        """Wait for the replies of every acknowledgement fired on the lane.

        ``wait=False``: not if another thread uses the lane now (it is then
        reading, which collects those replies anyway).
        """
        lane = self._lane
        if lane is not None and lane.lock.acquire(blocking=wait):
            try:
                lane.drain()
            finally:
                lane.lock.release()

    def close(self) -> None:
        lane, self._lane = self._lane, None
        if lane is not None:
            with lane.lock:
                try:
                    lane.close()
                except (RedisError, *_LOST) as error:
                    logger.debug("closing %r: %s", self.name, self.dsn.mask(str(error)))
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (RedisError, RedisClusterException, *_LOST) as error:  # pragma: no cover
                logger.debug("closing %r: %s", self.name, self.dsn.mask(str(error)))

    # -- errors --------------------------------------------------------------

    def _say(self, what: str, error: BaseException) -> str:
        refused = _CONNECT_FAILED.search(str(error))
        if refused is not None:
            # redis-py's "Error 111 connecting to h:p. Connection refused.":
            # say it the way a person would, as the other transports do.
            reason = refused.group("reason").rstrip(".").lower() or "no answer"
            text = f"cannot connect to Redis at {refused.group('where')}: {reason}"
        elif str(error):
            text = f"{type(error).__name__}: {error}"
        else:
            text = type(error).__name__
        return self.dsn.mask(f"transport {self.name!r}: {what}: {text}")

    @contextmanager
    def errors(self, what: str, failed_ids: Sequence[str] | None = None) -> Iterator[None]:
        """Translate redis-py's errors; ``failed_ids``: a send, whose refusal names them."""
        try:
            yield
        except _LOST as error:
            self._on_lost()
            raise ConnectionLost(self._say(what, error)) from None
        except (RedisError, RedisClusterException) as error:
            if _is_connection_trouble(error):
                self._on_lost()
                raise ConnectionLost(self._say(what, error)) from None
            if failed_ids is not None:
                raise PublishNotConfirmed(self._say(what, error), failed_ids) from None
            raise TransportError(self._say(what, error)) from None

    # -- commands ------------------------------------------------------------

    def call(self, *args: Any) -> Any:
        """One command, routed by its key (the caller translates errors)."""
        client: Any = self.client
        return client.execute_command(*args)

    def on_node_of(self, key: str, *args: Any) -> Any:
        """A command sent straight to the node that holds ``key`` (see XREADGROUP above)."""
        client: Any = self.client
        if self.cluster:
            return client.execute_command(*args, target_nodes=client.get_node_from_key(key))
        return client.execute_command(*args)

    def read(self, key: str, *args: Any) -> Any:
        """XREADGROUP: on the lane (after the replies of what was fired), or routed by ``key``."""
        lane = self.lane
        if lane is not None and lane.lock.acquire(blocking=False):
            try:
                return lane.call(*args)
            finally:
                lane.lock.release()
        return self.on_node_of(key, *args)

    def fire(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Run ``script`` without waiting for its reply where a lane is free, else run it."""
        lane = self.lane
        if lane is not None and lane.lock.acquire(blocking=False):
            try:
                lane.fire(script, keys, args)
                return
            finally:
                lane.lock.release()
        self.run(script, keys, args)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script``; every key must share one slot (one hash tag)."""
        client: Any = self.client
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(script.source)
            return client.evalsha(script.sha, len(keys), *keys, *args)

    def pipeline(self) -> Any:
        """A non-transactional pipeline (per node in a cluster)."""
        return self.client.pipeline(transaction=False)


def _as_sent(response: Any, **options: Any) -> Any:
    return response


def _is_connection_trouble(error: BaseException) -> bool:
    """Cluster errors that mean "the node is not there (yet)", not "you asked wrong"."""
    if isinstance(error, SlotNotCoveredError | MaxConnectionsError):
        return True
    text = str(error)
    if isinstance(error, RedisClusterException):
        return "connect" in text.lower()
    if isinstance(error, ResponseError):
        return text.startswith(("CLUSTERDOWN", "LOADING", "MASTERDOWN", "TRYAGAIN"))
    return False
