"""The options of a ``redis://`` DSN, with their defaults.

::

    redis://[user:password@]host:6379/0?queue=email&lease=120
    rediss://user:password@host:6380/0?queue=email&tls_ca_file=/etc/ca.pem
    redis+unix:///run/redis.sock?db=0&queue=email
    redis+cluster://user:password@10.0.0.1:7000,10.0.0.2:7000?queue=email

The database index is the DSN's path (``/0``, the default) or, for a Unix
socket, the ``db`` option. A cluster has only database 0. Every option below
is a query parameter; an unknown one is an error. docs/transports/redis.md
explains each in prose.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from courier.transports.dsn import TransportOptions

__all__ = ["REDIS_MAX_BULK", "RedisOptions"]

#: Redis refuses a string longer than ``proto-max-bulk-len`` (512 MiB by default).
REDIS_MAX_BULK = 512 * 1024 * 1024


class RedisOptions(TransportOptions):
    """DSN options; every default is written here and in docs/transports/redis.md."""

    #: The default queue of this transport (one stream per queue).
    queue: str = "default"
    #: Another name for ``queue``, as other Redis tools call it; set one of them.
    stream: str | None = None
    #: The consumer group every worker of a queue joins.
    group: str = "courier"
    #: Prefix of every key this transport writes (streams, delay sets, ...).
    prefix: str = "courier:"
    #: Seconds a message held by a dead or stuck worker stays pending before
    #: another worker reclaims it (the XAUTOCLAIM idle time). Workers renew
    #: what they hold every third of it.
    lease: float = Field(default=120.0, gt=0)
    #: Seconds between looks for messages to reclaim; default the smaller
    #: of 5 s and half the lease.
    reclaim_interval: float | None = Field(default=None, gt=0)
    #: Seconds between looks for delayed messages that fell due (each
    #: worker moves them to the stream); a delay is at most this late.
    delay_check: float = Field(default=0.5, gt=0)
    #: Entries one XREADGROUP takes per stream: what the worker did not ask
    #: for yet waits in the transport, pending to this consumer, and is
    #: handed out next without a round trip. 1 for long jobs shared by many workers.
    prefetch: int = Field(default=100, ge=1, le=10_000)
    #: Consumer names are ``<consumer>.<random>``; default the worker's id
    #: (``<host>.<pid>``), so XINFO CONSUMERS shows which worker holds what.
    consumer: str | None = None
    #: Database index for ``redis+unix://`` (TCP DSNs give it as the path).
    db: int | None = Field(default=None, ge=0)
    #: Seconds to open a connection.
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Seconds to wait for any reply; a blocking read waits at most half of it.
    socket_timeout: float = Field(default=10.0, gt=0)
    #: Ping a pooled connection idle for this many seconds before using it; 0: never.
    health_check_interval: float = Field(default=30.0, ge=0)
    #: Bodies larger than this many bytes are refused before sending.
    max_message_size: int = Field(default=REDIS_MAX_BULK, ge=1, le=REDIS_MAX_BULK)
    #: rediss:// only: verify the server's certificate and host name.
    tls_verify: bool = True
    #: rediss:// only: CA bundle (PEM) to verify the server with; default the system's.
    tls_ca_file: str | None = None
    #: rediss:// only: client certificate (PEM) and its key, for mutual TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: rediss:// only: the key file's password (masked like every secret).
    tls_key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _stream_is_the_queue(self) -> RedisOptions:
        if self.stream is None:
            return self
        if "queue" in self.model_fields_set and self.queue != self.stream:
            raise ValueError("set queue or stream, not both: they name the same thing")
        object.__setattr__(self, "queue", self.stream)
        return self

    @field_validator("queue", "stream")
    @classmethod
    def _check_queue(cls, queue: str | None) -> str | None:
        if queue is not None:
            check_queue_name(queue)
        return queue

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the prefix may not hold '{' or '}': they mark the hash tag")
        return prefix

    @field_validator("group", "consumer")
    @classmethod
    def _check_names(cls, name: str | None) -> str | None:
        if name is not None and (not name or any(c.isspace() for c in name)):
            raise ValueError("a group or consumer name is a non-empty word without spaces")
        return name

    def reclaim_every(self) -> float:
        """Seconds between reclaim checks (see ``reclaim_interval``)."""
        if self.reclaim_interval is not None:
            return self.reclaim_interval
        return min(5.0, self.lease / 2)


def check_queue_name(queue: str) -> None:
    """Refuse a queue name that cannot be a hash-tagged key (see keys.py)."""
    if not queue:
        raise ValueError("a queue name is not empty")
    if "{" in queue or "}" in queue:
        raise ValueError("a queue name may not hold '{' or '}' on Redis")
    if queue.startswith("."):
        raise ValueError("a queue name may not start with '.' on Redis")
