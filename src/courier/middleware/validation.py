"""Check each dispatched message against its own schema.

pydantic validates a message when it is built, but ``model_construct()``
and ``object.__setattr__`` bypass that; this middleware validates again
before anything leaves the process, so an invalid message fails at the
dispatch site rather than in a worker. On the consuming side the serializer
already validates while decoding; add this middleware to the consume stack
only for transports that pass Python objects (``memory://`` without
``serialize``).

Raises :class:`~courier.errors.ValidationFailed`, naming field paths and
error types, never values.
"""

from __future__ import annotations

from pydantic import ValidationError

from courier.envelope import Envelope
from courier.errors import ValidationFailed
from courier.middleware.base import Next

__all__ = ["ValidationMiddleware"]


class ValidationMiddleware:
    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        message = envelope.message
        cls = type(message)
        try:
            cls.__pydantic_validator__.validate_python(message.__dict__)
        except ValidationError as error:
            raise ValidationFailed.from_pydantic(cls.message_name, error) from None
        return next(envelope)
