"""A FastAPI app whose signup endpoint hands the welcome email to a courier worker.

    uvicorn signup_fastapi:app               # the web app
    courier consume email                    # the worker, in another terminal
    curl -H 'content-type: application/json' -d '{"email": "ada@example.com"}' \\
        localhost:8000/signup

``courier.toml`` beside this file names the bus (``app =``) and its
transports, for the web app and the worker alike. The endpoint awaits the
dispatch, which runs in a worker thread: the event loop never waits for
the broker. The worker writes each mail to ``outbox/`` (or
``$COURIER_EXAMPLE_OUTBOX``).
"""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from courier import Bus, Envelope, Message, handler
from courier.contrib.fastapi import Courier, CourierBus


class SendEmail(Message):
    """A command: exactly one handler sends it."""

    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str
    body: str = ""


@handler(SendEmail)
def send_email(message: SendEmail, envelope: Envelope) -> None:
    """Runs in the worker: "sends" the mail by writing it to the outbox."""
    outbox = Path(os.environ.get("COURIER_EXAMPLE_OUTBOX", Path(__file__).with_name("outbox")))
    mail = EmailMessage()
    mail["To"] = message.to
    mail["From"] = "courier-example@example.com"
    mail["Subject"] = message.subject
    mail.set_content(message.body)
    outbox.mkdir(parents=True, exist_ok=True)
    # Named after the message id: handling a message twice rewrites one file.
    (outbox / f"{envelope.id}.eml").write_bytes(bytes(mail))


def make_bus() -> Bus:
    """The app's bus (``app = "signup_fastapi:make_bus"``); courier.toml adds the transports."""
    bus = Bus()
    bus.register(send_email)
    return bus


courier = Courier()  # the configuration's app, opened at startup and closed at shutdown
app = FastAPI(lifespan=courier.lifespan)


class Signup(BaseModel):
    email: str


@app.post("/signup", status_code=202)
async def signup(form: Signup, bus: CourierBus) -> dict[str, str]:
    address = form.email.strip()
    if "@" not in address:
        raise HTTPException(status_code=400, detail="an email address is required")
    envelope = await bus.dispatch(
        SendEmail(
            to=address,
            subject="Welcome aboard",
            body="Thanks for signing up. This mail was sent by a courier worker.",
        )
    )
    return {"message_id": envelope.id}
