"""``POST /signup/?how=helper|bus|project|many|immediately&fail=1``: every way to dispatch."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from courier.contrib.django import bus, dispatch, get_bus
from courier_test_signups.messages import Welcome
from courier_test_signups.models import Signup


def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST["email"]
    how = request.GET.get("how", "helper")
    with transaction.atomic():
        Signup.objects.create(email=email)
        if how == "bus":
            envelope = bus.dispatch(Welcome(email=email))
        elif how == "project":
            envelope = get_bus().dispatch(Welcome(email=email))
        elif how == "many":
            [envelope, _] = get_bus().dispatch_many([Welcome(email=email), Welcome(email=email)])
        else:
            envelope = dispatch(Welcome(email=email), on_commit=how != "immediately")
        if request.GET.get("fail"):
            raise RuntimeError("the payment provider declined")
    return JsonResponse({"message_id": envelope.id}, status=201)
