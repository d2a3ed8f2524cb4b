"""Wire name <-> class: the only way a name from the wire becomes a type.

Nothing that arrives from a broker is ever imported: a name resolves to a
class only if the application registered that class (by routing it,
handling it or dispatching it). ``os.system`` in a ``type`` header is an
unknown name like any other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from courier.errors import ConfigurationError
from courier.message import Message

__all__ = ["MessageRegistry"]


class MessageRegistry:
    """The message classes one bus knows, by wire name."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Message]] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[Message]) -> type[Message]:
        """Make ``cls`` decodable; registering the same class twice is harmless."""
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise ConfigurationError(f"{cls!r} is not a courier Message class")
        name = cls.message_name
        known = self._by_name.get(name)
        if known is cls:
            return cls
        if known is not None:
            raise ConfigurationError(
                f"wire name {name!r} is used by both {known.__module__}.{known.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )
        with self._lock:
            self._by_name = {**self._by_name, name: cls}
        return cls

    def resolve(self, name: str) -> type[Message] | None:
        """The class registered under ``name``, or None: never an import."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[type[Message]]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)
