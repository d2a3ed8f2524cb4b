"""STOMP transport for courier (RabbitMQ's STOMP plugin, ActiveMQ, Artemis), on stomp.py.

``pip install "courier-bus[stomp]"`` installs it; ``stomp://`` and
``stomp+ssl://`` DSNs then open a :class:`StompTransport`. See
docs/transports/stomp.md.
"""

from courier_stomp.options import DEFAULT_DELAY_LEVELS, StompOptions
from courier_stomp.transport import StompTransport

__all__ = ["DEFAULT_DELAY_LEVELS", "StompOptions", "StompTransport"]
