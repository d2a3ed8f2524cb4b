"""Found by courier.contrib.django in every installed app, as admin.py is by the admin."""

from email.message import EmailMessage

from django.conf import settings
from django.utils import timezone

from accounts.messages import SendWelcomeEmail
from accounts.models import Signup
from courier import Envelope, handler


@handler(SendWelcomeEmail)
def send_welcome_email(message: SendWelcomeEmail, envelope: Envelope) -> None:
    """Runs in the worker (``manage.py courier consume email``), with the ORM at hand."""
    signup = Signup.objects.get(pk=message.signup_id)
    mail = EmailMessage()
    mail["To"] = signup.email
    mail["From"] = "courier-example@example.com"
    mail["Subject"] = f"Welcome aboard, {signup.username}"
    mail.set_content("Thanks for signing up. This mail was sent by a courier worker.")
    outbox = settings.OUTBOX_DIR
    outbox.mkdir(parents=True, exist_ok=True)
    # Named after the message id: handling a message twice rewrites one file.
    (outbox / f"{envelope.id}.eml").write_bytes(bytes(mail))
    signup.welcomed_at = timezone.now()
    signup.save(update_fields=["welcomed_at"])
