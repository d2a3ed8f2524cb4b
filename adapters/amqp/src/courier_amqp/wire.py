"""What goes on the wire: connection parameters and message properties.

Part of the connection (:mod:`courier_amqp.connection`). courier's
headers are str -> str; AMQP has properties of its own for some of them,
which courier uses so foreign tools see a normal AMQP message:

=================  =====================================
courier header     AMQP
=================  =====================================
content-type       ``properties.content_type``
courier-id         ``properties.message_id``
courier-type       ``properties.type``
everything else    ``properties.headers`` (str values)
=================  =====================================

Messages are persistent (``delivery_mode=2``). On the way in, header values
of any AMQP type become str, and RabbitMQ's own headers (delivery count,
dead-lettering history) are taken out: they are not courier's.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from typing import Any, NamedTuple

import pika  # type: ignore[import-untyped]

from courier.errors import ConfigurationError
from courier.transports.dsn import Dsn
from courier_amqp.options import AmqpOptions

__all__ = ["BROKER_HEADERS", "Outgoing", "incoming_headers", "outgoing", "parameters"]


def parameters(dsn: Dsn, options: AmqpOptions, connection_name: str) -> list[Any]:
    """pika's ConnectionParameters for each host of ``dsn``, in the order to try them.

    The password goes only here.
    """
    tls = dsn.scheme == "amqps"
    vhost = dsn.path[1:] if dsn.path.startswith("/") else dsn.path
    context: ssl.SSLContext | None = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=options.tls_ca_file)
            if not options.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if options.tls_cert_file:
                password = options.tls_key_password
                context.load_cert_chain(
                    options.tls_cert_file,
                    options.tls_key_file,
                    password.get_secret_value() if password is not None else None,
                )
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(f"amqps:// TLS files could not be loaded: {error}") from None
    hosts = dsn.hosts or (("localhost", None),)
    return [
        pika.ConnectionParameters(
            host=host,
            port=port or (5671 if tls else 5672),
            virtual_host=vhost or "/",
            credentials=pika.PlainCredentials(dsn.username or "guest", dsn.password or "guest"),
            heartbeat=options.heartbeat,
            ssl_options=(
                None
                if context is None
                else pika.SSLOptions(context, options.tls_server_name or host)
            ),
            connection_attempts=1,
            socket_timeout=options.connect_timeout,
            stack_timeout=options.connect_timeout,
            blocked_connection_timeout=options.blocked_timeout,
            client_properties={"connection_name": connection_name, "product": "courier"},
        )
        for host, port in hosts
    ]


class Outgoing(NamedTuple):
    """One message to publish: where, what, and its id for the error report."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Any
    mandatory: bool
    message_id: str


def outgoing(
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, str],
    message_id: str,
    *,
    mandatory: bool,
    priority: int | None = None,
) -> Outgoing:
    """A persistent message; courier's content type, id and type go in AMQP's properties.

    ``priority`` (0-9) becomes AMQP's priority property, which queues declared
    with ``x-max-priority`` serve by.
    """
    content_type = headers.pop("content-type", None)
    message_type = headers.pop("courier-type", None)
    headers.pop("courier-id", None)
    properties = pika.BasicProperties(
        content_type=content_type,
        delivery_mode=2,
        message_id=message_id,
        type=message_type,
        headers=headers or None,
        priority=priority,
    )
    return Outgoing(exchange, routing_key, body, properties, mandatory, message_id)


#: Headers RabbitMQ adds (delivery counts, dead-lettering history): not courier's.
BROKER_HEADERS = frozenset(
    {
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)


def incoming_headers(properties: Any) -> tuple[dict[str, str], int]:
    """courier's str headers and the delivery count (1 on the first) of a delivery.

    Header values come back as str whatever type the producer used; AMQP's
    own content type, message id and type fill ``content-type``,
    ``courier-id`` and ``courier-type``.
    Quorum queues count earlier deliveries in ``x-delivery-count`` (absent or
    0 on the first).
    """
    raw = properties.headers
    headers: dict[str, str] = {}
    count = 1
    if raw:
        for key, value in raw.items():
            if key in BROKER_HEADERS:
                if key == "x-delivery-count" and isinstance(value, int):
                    count = value + 1
                continue
            headers[key] = value if type(value) is str else _text(value)
    if properties.content_type is not None and "content-type" not in headers:
        headers["content-type"] = properties.content_type
    if properties.message_id is not None and "courier-id" not in headers:
        headers["courier-id"] = properties.message_id
    if properties.type is not None and "courier-type" not in headers:
        headers["courier-type"] = properties.type
    return headers, count


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
