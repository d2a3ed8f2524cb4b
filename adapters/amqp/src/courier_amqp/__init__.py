"""AMQP 0-9-1 transport for courier (RabbitMQ), on pika.

``pip install "courier-bus[amqp]"`` installs it; ``amqp://`` and ``amqps://``
DSNs then open an :class:`AmqpTransport`. See docs/transports/amqp.md.
"""

from courier_amqp.options import DEFAULT_DELAY_LEVELS, AmqpOptions
from courier_amqp.transport import AmqpTransport

__all__ = ["DEFAULT_DELAY_LEVELS", "AmqpOptions", "AmqpTransport"]
