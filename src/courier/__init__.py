"""courier: hand work to background workers through any message broker, with one API.

::

    from courier import Bus, Message

    class SendEmail(Message):
        message_name: ClassVar[str] = "email.send"
        to: str

    bus = Bus(transports={"email": "sqlite:///courier.db?queue=email"})
    bus.route(SendEmail, "email")
    bus.dispatch(SendEmail(to="ada@example.com"))      # in the web app
    # courier consume email                             # on the worker box
"""

from courier.bus import Bus
from courier.dead_letters import InvalidMessage
from courier.envelope import Envelope, ErrorDetails
from courier.errors import (
    ConfigurationError,
    ConnectionLost,
    CourierError,
    DeliveryLimitExceeded,
    HandlerFailed,
    MessageDecodingFailed,
    MessageTooLarge,
    NoHandlerForMessage,
    PublishNotConfirmed,
    RecoverableError,
    StopWorker,
    TransportError,
    UnrecoverableError,
    ValidationFailed,
)
from courier.handlers import handler
from courier.handling import current_envelope
from courier.heartbeat import Heartbeat
from courier.message import Event, Message
from courier.middleware import AckPolicy, Middleware, Next, RetryPolicy, RetryStrategy
from courier.routing import Route
from courier.transports.base import Capabilities, Listable, QueueStats, Received, Transport
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

__version__ = "0.1.0"

__all__ = [
    "AckPolicy",
    "Bus",
    "Capabilities",
    "ConfigurationError",
    "ConnectionLost",
    "CourierError",
    "DeliveryLimitExceeded",
    "Dsn",
    "Envelope",
    "ErrorDetails",
    "Event",
    "HandlerFailed",
    "Heartbeat",
    "InvalidMessage",
    "Listable",
    "Message",
    "MessageDecodingFailed",
    "MessageTooLarge",
    "Middleware",
    "Next",
    "NoHandlerForMessage",
    "PublishNotConfirmed",
    "QueueStats",
    "Received",
    "RecoverableError",
    "RetryPolicy",
    "RetryStrategy",
    "Route",
    "StopWorker",
    "Transport",
    "TransportError",
    "UnrecoverableError",
    "ValidationFailed",
    "Worker",
    "WorkerOptions",
    "current_envelope",
    "handler",
]
