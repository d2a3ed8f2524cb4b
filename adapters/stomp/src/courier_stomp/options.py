"""The options of a ``stomp://`` / ``stomp+ssl://`` DSN, with their defaults.

``stomp://user:password@host:61613/vhost?queue=email&prefetch=50``

The path is RabbitMQ's virtual host, URL-encoded as for AMQP: ``/%2f`` is
``/`` (the default), ``/prod`` is ``prod``; no path means ``/``. STOMP
carries it in the CONNECT frame's ``host`` header (ActiveMQ and Artemis
ignore it). Every option below is a query parameter; an unknown one is an
error. docs/transports/stomp.md explains each in prose.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from courier.transports.dsn import TransportOptions

__all__ = ["DEFAULT_DELAY_LEVELS", "RABBITMQ_MAX_MESSAGE_SIZE", "StompOptions"]

#: Seconds a delayed message may wait on RabbitMQ: a delay is rounded up to the next level.
DEFAULT_DELAY_LEVELS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

#: RabbitMQ's own default ``max_message_size`` (128 MiB).
RABBITMQ_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


def _levels(value: object) -> object:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        return tuple(part for part in parts if part)
    return value


class StompOptions(TransportOptions):
    """DSN options; every default is written here and in docs/transports/stomp.md."""

    #: The default queue of this transport.
    queue: str = "default"
    #: Which broker speaks STOMP at the other end; every difference between
    #: them lives in :mod:`courier_stomp.flavors`. Only RabbitMQ is tested.
    flavor: Literal["rabbitmq", "activemq", "artemis"] = "rabbitmq"
    #: RabbitMQ only. ``classic``: plain durable queues without arguments,
    #: exactly what RabbitMQ declares for any STOMP client that sends to
    #: ``/queue/<name>``, so foreign producers need no special headers.
    #: ``quorum``: quorum queues (``x-queue-type: quorum``), which count
    #: deliveries; every producer must then send that header too (or send to
    #: ``/amq/queue/<name>``), or RabbitMQ refuses its SEND.
    queue_type: Literal["classic", "quorum"] = "classic"
    #: Unacknowledged messages the broker sends ahead, per consumed queue.
    prefetch: int = Field(default=100, ge=1, le=65535)
    #: SEND receipts kept outstanding at most, per connection.
    receipt_window: int = Field(default=1000, ge=1)
    #: Seconds to wait for a receipt before PublishNotConfirmed.
    receipt_timeout: float = Field(default=30.0, gt=0)
    #: Seconds between heart-beats each way; 0 turns them off.
    heartbeat: float = Field(default=10.0, ge=0)
    #: Seconds a message held by a consumer that vanished without closing
    #: its connection (a hung host, a cut network) stays invisible before
    #: the broker gives it to another. A closed connection's messages come
    #: back at once. Sets ``heartbeat`` to a third of it: RabbitMQ closes a
    #: connection after two to three silent heart-beat intervals (counted in
    #: whole seconds, so a lease under 3 s behaves as about 3 s).
    lease: float | None = Field(default=None, gt=0)
    #: Seconds to open the TCP connection and the STOMP session, and to wait
    #: for the receipt of a SUBSCRIBE or DISCONNECT.
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Delays are possible (RabbitMQ: TTL queues; ActiveMQ and Artemis: the
    #: broker's scheduler, which must be enabled). False: the bus refuses
    #: delayed messages and retry delays for this transport at startup.
    delays: bool = True
    #: RabbitMQ only: delay queues are ``<delay_prefix>.<ms>.queue.<queue>``
    #: and ``<delay_prefix>.<ms>.topic.<topic>``.
    delay_prefix: str = "courier.delay"
    #: RabbitMQ only: comma-separated seconds; a delay is rounded up to the next level.
    delay_levels: Annotated[tuple[float, ...], BeforeValidator(_levels)] = DEFAULT_DELAY_LEVELS
    #: ``reject`` moves a message of queue ``q`` to the queue ``q<dead_letter_suffix>``.
    dead_letter_suffix: str = ".dead"
    #: Bodies larger than this many bytes are refused before sending.
    max_message_size: int | None = Field(default=RABBITMQ_MAX_MESSAGE_SIZE, ge=1)
    #: ActiveMQ and Artemis: the CONNECT frame's ``client-id``; none by default.
    client_id: str | None = None
    #: stomp+ssl:// only: verify the server's certificate and host name.
    tls_verify: bool = True
    #: stomp+ssl:// only: CA bundle (PEM) to verify the server with; default: the system's.
    tls_ca_file: str | None = None
    #: stomp+ssl:// only: client certificate (PEM) and its key, for mutual TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: stomp+ssl:// only: the key file's password (masked like every secret).
    tls_key_password: SecretStr | None = None

    @field_validator("delay_levels")
    @classmethod
    def _check_levels(cls, levels: tuple[float, ...]) -> tuple[float, ...]:
        if not levels:
            raise ValueError("at least one delay level is needed (set delays=false for none)")
        if any(not math.isfinite(level) or level <= 0 for level in levels):
            raise ValueError("delay levels are positive numbers of seconds")
        millis = sorted({round(level * 1000) for level in levels})
        if millis[0] < 1:
            raise ValueError("delay levels are at least 0.001 seconds")
        return tuple(ms / 1000 for ms in millis)

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, queue: str) -> str:
        if not queue or len(queue.encode()) > 255:
            raise ValueError("a queue name is 1 to 255 bytes")
        return queue

    @model_validator(mode="after")
    def _lease_sets_the_heartbeat(self) -> StompOptions:
        if self.lease is None:
            return self
        if "heartbeat" in self.model_fields_set:
            raise ValueError("set lease or heartbeat, not both: lease sets the heartbeat")
        object.__setattr__(self, "heartbeat", self.lease / 3)
        return self
