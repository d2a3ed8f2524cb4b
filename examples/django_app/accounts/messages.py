from typing import ClassVar

from courier import Message


class SendWelcomeEmail(Message):
    """Carries the row's id, not its data: the worker reads the committed row."""

    message_name: ClassVar[str] = "accounts.send-welcome-email"

    signup_id: int
