"""courier's middleware, one module each; write your own the same way."""

from courier.middleware.acknowledge import AcknowledgeMiddleware, AckPolicy
from courier.middleware.base import Middleware, Next, compose
from courier.middleware.logging import LoggingMiddleware
from courier.middleware.max_deliveries import MaxDeliveriesMiddleware
from courier.middleware.retry import RetryMiddleware, RetryPolicy, RetryStrategy
from courier.middleware.validation import ValidationMiddleware

__all__ = [
    "AckPolicy",
    "AcknowledgeMiddleware",
    "LoggingMiddleware",
    "MaxDeliveriesMiddleware",
    "Middleware",
    "Next",
    "RetryMiddleware",
    "RetryPolicy",
    "RetryStrategy",
    "ValidationMiddleware",
    "compose",
]
