"""The email example's messages and handler.

A web app would call ``bus.dispatch(SendEmail(...))`` where this example's
``produce.py`` does; ``courier consume email`` runs :func:`send_email` in a
worker. "Sending" writes each mail to ``outbox/`` so the result is visible.
"""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar

from courier import Bus, Envelope, Message, UnrecoverableError

OUTBOX = Path(os.environ.get("COURIER_EXAMPLE_OUTBOX", Path(__file__).with_name("outbox")))


class SendEmail(Message):
    """A command: exactly one handler sends it."""

    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str
    body: str = ""


bus = Bus.from_config()


@bus.handler(SendEmail)
def send_email(message: SendEmail, envelope: Envelope) -> None:
    if message.to.endswith("@invalid.example"):
        # Retrying cannot fix an address that does not exist.
        raise UnrecoverableError(f"no mailbox for {message.to}")
    mail = EmailMessage()
    mail["To"] = message.to
    mail["From"] = "courier-example@example.com"
    mail["Subject"] = message.subject
    mail["Message-ID"] = f"<{envelope.id}@courier.example>"
    mail.set_content(message.body)
    OUTBOX.mkdir(parents=True, exist_ok=True)
    # Named after the message id: handling a message twice rewrites one file.
    target = OUTBOX / f"{envelope.id}.eml"
    partial = target.with_suffix(".tmp")
    partial.write_bytes(bytes(mail))
    partial.replace(target)
