"""A Flask app whose signup view hands the welcome email to a courier worker.

    flask --app signup_flask run                      # the web app
    flask --app signup_flask courier consume email    # the worker, in another terminal
    curl -d email=ada@example.com localhost:5000/signup

The view returns as soon as the message is on the queue; the worker writes
each mail to ``outbox/`` (or ``$COURIER_EXAMPLE_OUTBOX``) so the result is
visible. Change the ``email`` DSN below to move it to RabbitMQ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

from flask import Flask, request

from courier import Envelope, Message
from courier.contrib.flask import Courier


class SendEmail(Message):
    """A command: exactly one handler sends it."""

    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str
    body: str = ""


courier = Courier()


@courier.handler(SendEmail)
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


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app factory ``flask --app signup_flask`` finds."""
    app = Flask(__name__)
    app.config["COURIER"] = {
        "transports": {"email": "sqlite:///courier.db?queue=email"},
        # "transports": {"email": "amqp://guest:guest@localhost:5672/%2f?queue=email"},
        "routing": {"email.send": "email"},
        "retry": {"max_retries": 2, "delay": 0.2},
    }
    app.config.update(config or {})
    courier.init_app(app)

    @app.post("/signup")
    def signup() -> tuple[dict[str, str], int]:
        address = request.form.get("email", "").strip()
        if "@" not in address:
            return {"error": "an email address is required"}, 400
        envelope = courier.dispatch(
            SendEmail(
                to=address,
                subject="Welcome aboard",
                body="Thanks for signing up. This mail was sent by a courier worker.",
            )
        )
        return {"message_id": envelope.id}, 202

    return app
