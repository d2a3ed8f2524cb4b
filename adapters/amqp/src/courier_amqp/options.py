"""The options of an ``amqp://`` / ``amqps://`` DSN, with their defaults.

``amqp://user:password@host:5672/vhost?queue=email&prefetch=50``

The vhost is the DSN's path, URL-encoded: ``/%2f`` is ``/`` (RabbitMQ's
default), ``/prod`` is ``prod``; no path means ``/``. Every option below is
a query parameter; an unknown one is an error. docs/transports/amqp.md
explains each in prose.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from courier.transports.dsn import TransportOptions

__all__ = ["DEFAULT_DELAY_LEVELS", "AmqpOptions", "default_connection_name"]

#: Seconds a delayed message may wait: a delay is rounded up to the next level.
DEFAULT_DELAY_LEVELS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

#: RabbitMQ's own default ``max_message_size`` (128 MiB): bigger bodies close the channel.
RABBITMQ_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


def _levels(value: object) -> object:
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        return tuple(part for part in parts if part)
    return value


class AmqpOptions(TransportOptions):
    """DSN options; every default is written here and in docs/transports/amqp.md."""

    #: The default queue of this transport.
    queue: str = "default"
    #: Exchange for commands: "" (the AMQP default exchange, routing by queue
    #: name) or a direct exchange that ``setup`` declares and binds each queue to.
    exchange: str = ""
    #: Prefix of the fanout exchange per topic (the exchange is ``<prefix><topic>``).
    topic_prefix: str = ""
    #: Direct exchange that takes rejected and over-delivered messages.
    dead_letter_exchange: str = "courier.dead-letter"
    #: Each queue ``q`` has a dead-letter queue ``q<suffix>``.
    dead_letter_suffix: str = ".dead"
    #: Delay queues are ``<delay_prefix>.<milliseconds>``, one per level.
    delay_prefix: str = "courier.delay"
    #: Comma-separated seconds; a delay is rounded up to the next level.
    delay_levels: Annotated[tuple[float, ...], BeforeValidator(_levels)] = DEFAULT_DELAY_LEVELS
    #: quorum (delivery counts, delivery limit; no priorities) or classic.
    queue_type: Literal["quorum", "classic"] = "quorum"
    #: Classic queues only: declare them with ``x-max-priority`` so courier's
    #: priorities (0-9, 9 first) are served in order; quorum queues have none.
    max_priority: int | None = Field(default=None, ge=1, le=9)
    #: Quorum queues dead-letter a message handed out more often than this;
    #: keep it above the bus's ``max_deliveries`` (10), which acts first.
    delivery_limit: int = Field(default=20, ge=1)
    #: Unacknowledged messages the broker sends ahead, per consumed queue.
    prefetch: int = Field(default=100, ge=1, le=65535)
    #: Publisher confirms kept in flight at most, per connection.
    confirm_window: int = Field(default=1000, ge=1)
    #: Seconds to wait for a publisher confirm before PublishNotConfirmed.
    confirm_timeout: float = Field(default=30.0, gt=0)
    #: ``each``: ``send`` returns once the broker confirmed the message.
    #: ``async``: ``send`` returns once the message is written; confirms are
    #: collected in the background (at most ``confirm_window`` in flight) and
    #: a nack or return is raised by the next ``send``, by ``flush()`` and by
    #: ``close()``. Batches (``send_many``), retries and events always wait.
    confirm: Literal["each", "async"] = "each"
    #: Seconds between heartbeats (the broker may negotiate it down); 0 turns them off.
    heartbeat: int = Field(default=60, ge=0)
    #: Seconds a message held by a dead worker stays invisible. RabbitMQ gives
    #: a closed connection's messages back at once; ``lease`` bounds the wait
    #: for a worker that vanished without closing (a hung host, a cut
    #: network) by setting the heartbeat to half of it. Default: the heartbeat's.
    lease: float | None = Field(default=None, gt=0)
    #: Seconds to open the TCP connection and the AMQP session.
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Seconds the broker may block publishing (a resource alarm) before the
    #: connection is dropped and the publish fails; none waits for ever.
    blocked_timeout: float | None = Field(default=60.0, gt=0)
    #: Declare exchanges and queues on first use (``courier setup`` always does).
    auto_setup: bool = True
    #: Bodies larger than this many bytes are refused before sending.
    max_message_size: int | None = Field(default=RABBITMQ_MAX_MESSAGE_SIZE, ge=1)
    #: Shown in the management UI; default ``courier <transport> <host>.<pid>``,
    #: the worker's default id.
    connection_name: str | None = None
    #: amqps:// only: verify the server's certificate and host name.
    tls_verify: bool = True
    #: amqps:// only: CA bundle (PEM) to verify the server with; default: the system's.
    tls_ca_file: str | None = None
    #: amqps:// only: client certificate (PEM) and its key, for mutual TLS.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: amqps:// only: the key file's password (masked like every secret).
    tls_key_password: SecretStr | None = None
    #: amqps:// only: the name to check the certificate against; default: the DSN's host.
    tls_server_name: str | None = None

    @field_validator("delay_levels")
    @classmethod
    def _check_levels(cls, levels: tuple[float, ...]) -> tuple[float, ...]:
        if not levels:
            raise ValueError("at least one delay level is needed")
        if any(not math.isfinite(level) or level <= 0 for level in levels):
            raise ValueError("delay levels are positive numbers of seconds")
        millis = sorted({round(level * 1000) for level in levels})
        if millis[0] < 1:
            raise ValueError("delay levels are at least 0.001 seconds")
        return tuple(ms / 1000 for ms in millis)

    @model_validator(mode="after")
    def _priorities_need_classic_queues(self) -> AmqpOptions:
        if self.max_priority is not None and self.queue_type != "classic":
            raise ValueError(
                "max_priority needs queue_type=classic: quorum queues have no priorities"
            )
        return self

    @model_validator(mode="after")
    def _lease_sets_the_heartbeat(self) -> AmqpOptions:
        if self.lease is None:
            return self
        if "heartbeat" in self.model_fields_set:
            raise ValueError("set lease or heartbeat, not both: lease sets the heartbeat")
        object.__setattr__(self, "heartbeat", max(1, math.ceil(self.lease / 2)))
        return self

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, queue: str) -> str:
        if not queue or len(queue.encode()) > 255:
            raise ValueError("a queue name is 1 to 255 bytes")
        return queue


def default_connection_name(transport: str) -> str:
    """``courier <transport> <host>.<pid>``: the worker's default id is ``<host>.<pid>``."""
    return f"courier {transport} {socket.gethostname()}.{os.getpid()}"
