"""The base classes users write their messages on.

A message is data: a pydantic model with no behaviour and no connections.
Its wire name is what travels in the ``type`` header and the only thing the
consuming side uses to pick a class (through :mod:`courier.registry`), so it
must stay stable when the class moves: set it explicitly for anything that
outlives one deploy::

    class SendEmail(Message):
        message_name: ClassVar[str] = "email.send"
        to: str
        subject: str
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from courier.errors import ConfigurationError

__all__ = ["Event", "Message", "defined_message", "valid_message_name"]

# Letters, digits and a few separators: a wire name is an identifier, never a
# path or an expression, so nothing that arrives in a header can smuggle one in.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,254}$")


#: Every Message class defined (imported) in this process, by wire name. Only
#: routing configured by name consults it, to register the class it names;
#: decoding never does (see courier.registry).
_defined: dict[str, list[type[Message]]] = {}


def defined_message(name: str) -> type[Message] | None:
    """The one class this process defined under wire name ``name``, if exactly one."""
    found = _defined.get(name, [])
    return found[0] if len(found) == 1 else None


def valid_message_name(name: str) -> bool:
    """Whether ``name`` has the shape of a wire name (it may still be unknown)."""
    return bool(_NAME.match(name)) and ".." not in name


class Message(BaseModel):
    """A command: routed point to point, handled by exactly one handler.

    Frozen, because a message that changes after dispatch would be handled
    differently from how it was logged and sent.
    """

    model_config = ConfigDict(frozen=True)

    #: The stable name on the wire; derived from module and qualified name
    #: when the class does not set it.
    message_name: ClassVar[str] = "courier.Message"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "message_name" not in cls.__dict__:
            # A class defined in a function (a test, often) drops "<locals>".
            qualname = cls.__qualname__.replace("<locals>.", "")
            cls.message_name = f"{cls.__module__}.{qualname}"
        if not valid_message_name(cls.message_name):
            raise ConfigurationError(
                f"{cls.__qualname__}.message_name {cls.message_name!r} is not a valid wire name "
                "(letters, digits, '_', '.', ':', '-'; starts with a letter or '_')"
            )
        same = _defined.setdefault(cls.message_name, [])
        # A module imported twice (or reloaded) defines the "same" class again.
        same[:] = [
            c for c in same if (c.__module__, c.__qualname__) != (cls.__module__, cls.__qualname__)
        ]
        same.append(cls)


class Event(Message):
    """Something that happened: published to every subscription of its topic.

    Any number of handlers may subscribe, each with its own queue, and none
    is required.
    """

    message_name: ClassVar[str] = "courier.Event"
