from typing import ClassVar

from courier import Message


class Welcome(Message):
    message_name: ClassVar[str] = "signups.welcome"

    email: str
