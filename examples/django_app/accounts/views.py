from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from accounts.messages import SendWelcomeEmail
from accounts.models import Signup
from courier.contrib.django import bus


@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "").strip()
    username = request.POST.get("username", "").strip()
    if "@" not in email or not username:
        return JsonResponse({"error": "an email address and a username are required"}, status=400)
    try:
        with transaction.atomic():
            signup = Signup.objects.create(email=email)
            # Sent when the transaction commits: never for a rolled-back signup,
            # and the worker always finds the row.
            envelope = bus.dispatch(SendWelcomeEmail(signup_id=signup.pk))
            signup.username = username
            signup.save(update_fields=["username"])  # a taken username rolls it all back
    except IntegrityError:
        return JsonResponse({"error": "that email address or username is taken"}, status=409)
    return JsonResponse({"signup": signup.pk, "message_id": envelope.id}, status=202)
