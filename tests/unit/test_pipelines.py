"""Pipelines: a handler's returned message is dispatched before the incoming one is acked."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import Envelope, Message, PublishNotConfirmed, current_envelope
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from courier import Bus
    from courier.transports.base import Received
    from courier.worker import Worker


class Order(Message):
    message_name: ClassVar[str] = "shop.order"

    order: int


class Charge(Message):
    message_name: ClassVar[str] = "shop.charge"

    order: int


class Ship(Message):
    message_name: ClassVar[str] = "shop.ship"

    order: int


class Notify(Message):
    message_name: ClassVar[str] = "shop.notify"

    order: int
    channel: str = "email"


class Journal(MemoryTransport):
    """Writes every send and acknowledgement, in order, to a shared journal."""

    journal: list[tuple[str, str]]
    refuse: set[str]

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        if envelope.type in self.refuse:
            raise PublishNotConfirmed("broker said no", [envelope.id])
        self.journal.append(("send", envelope.type))
        return super().send(envelope, queue)

    def ack_many(self, received: Sequence[Received]) -> None:
        for item in received:
            assert item.envelope is not None
            self.journal.append(("ack", item.envelope.type))
        super().ack_many(received)

    def ack(self, received: Received) -> None:
        assert received.envelope is not None
        self.journal.append(("ack", received.envelope.type))
        super().ack(received)


@pytest.fixture
def shop(make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]) -> Bus:
    bus = make_bus()
    journal: list[tuple[str, str]] = []
    for name in ("orders", "payments"):
        transport = add_memory(bus, name, cls=Journal)
        assert isinstance(transport, Journal)
        transport.journal = journal
        transport.refuse = set()
    bus.route(Order, "orders")
    bus.route(Charge, "payments")
    return bus


def journal(bus: Bus) -> list[tuple[str, str]]:
    transport = bus.transport("orders")
    assert isinstance(transport, Journal)
    return transport.journal


def test_the_returned_message_is_sent_before_the_incoming_one_is_acked(
    shop: Bus, run_worker: Callable[..., Worker]
) -> None:
    shop.add_handler(lambda order: Charge(order=order.order), Order)
    shop.dispatch(Order(order=1))
    run_worker(shop, ["orders"])
    assert journal(shop) == [("send", "shop.order"), ("send", "shop.charge"), ("ack", "shop.order")]
    payments = shop.transport("payments")
    assert isinstance(payments, Journal)
    assert [e.message for e in payments.sent] == [Charge(order=1)]


def test_if_the_next_stage_cannot_be_sent_the_incoming_message_is_not_acked(
    shop: Bus, run_worker: Callable[..., Worker]
) -> None:
    payments = shop.transport("payments")
    assert isinstance(payments, Journal)
    payments.refuse.add("shop.charge")
    attempts: list[int] = []

    def order(message: Order, envelope: Envelope) -> Charge:
        attempts.append(envelope.attempt)
        return Charge(order=message.order)

    shop.add_handler(order, Order)
    shop.dispatch(Order(order=1))
    worker = run_worker(shop, ["orders"])
    assert attempts == [1, 2, 3, 4]  # retried, never acknowledged as done
    assert ("ack", "shop.order") not in journal(shop)
    assert (worker.handled, worker.failed, worker.retried) == (0, 1, 3)
    orders = shop.transport("orders")
    assert isinstance(orders, MemoryTransport)
    assert [reason for _, reason in orders.rejected] == ["PublishNotConfirmed: broker said no"]


def test_the_correlation_id_carries_through_every_stage(
    shop: Bus, run_worker: Callable[..., Worker]
) -> None:
    seen: dict[str, Envelope] = {}

    def stage(next_stage: Callable[[int], Message] | None) -> Callable[[Message], Message | None]:
        def handle(message: Message) -> Message | None:
            envelope = current_envelope()
            assert envelope is not None
            seen[envelope.type] = envelope
            return None if next_stage is None else next_stage(message.order)  # type: ignore[attr-defined]

        return handle

    shop.route(Ship, "orders", queue="shipping")
    shop.route(Notify, "payments", queue="notify")
    shop.add_handler(stage(lambda n: Charge(order=n)), Order)
    shop.add_handler(stage(lambda n: Ship(order=n)), Charge)
    shop.add_handler(stage(lambda n: Notify(order=n)), Ship)
    shop.add_handler(stage(None), Notify)
    first = shop.dispatch(Order(order=9))
    run_worker(shop, ["orders", "payments"])
    order, charge, ship, notify = (
        seen[name] for name in ("shop.order", "shop.charge", "shop.ship", "shop.notify")
    )
    assert order.id == first.id
    assert order.correlation_id is None
    assert charge.correlation_id == ship.correlation_id == notify.correlation_id == first.id
    assert charge.causation_id == order.id
    assert ship.causation_id == charge.id
    assert notify.causation_id == ship.id
    assert len({order.id, charge.id, ship.id, notify.id}) == 4
    assert notify.message == Notify(order=9)


def test_an_explicit_correlation_id_is_kept(shop: Bus, run_worker: Callable[..., Worker]) -> None:
    seen: list[Envelope] = []

    def charge(message: Charge, envelope: Envelope) -> None:
        seen.append(envelope)

    shop.add_handler(lambda order: Charge(order=order.order), Order)
    shop.add_handler(charge, Charge)
    shop.dispatch(Order(order=1), correlation_id="conversation-42")
    run_worker(shop, ["orders", "payments"])
    assert [e.correlation_id for e in seen] == ["conversation-42"]


def test_a_list_of_messages_dispatches_each(shop: Bus, run_worker: Callable[..., Worker]) -> None:
    shop.route(Notify, "orders", queue="notify")
    shop.add_handler(
        lambda order: [Notify(order=order.order, channel=c) for c in ("email", "sms")], Order
    )
    handled: list[str] = []
    shop.add_handler(lambda notify: handled.append(notify.channel), Notify)
    shop.dispatch(Order(order=1))
    run_worker(shop, ["orders"])
    assert sorted(handled) == ["email", "sms"]
    assert journal(shop)[:4] == [
        ("send", "shop.order"),
        ("send", "shop.notify"),
        ("send", "shop.notify"),
        ("ack", "shop.order"),
    ]


def test_a_pipeline_in_process(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    seen: list[Envelope] = []

    def charge(message: Charge, envelope: Envelope) -> None:
        seen.append(envelope)

    bus.add_handler(lambda order: Charge(order=order.order), Order)
    bus.add_handler(charge, Charge)
    first = bus.dispatch(Order(order=5))
    [second] = seen
    assert second.message == Charge(order=5)
    assert second.correlation_id == first.id
    assert second.causation_id == first.id
    assert current_envelope() is None


def test_a_dispatch_inside_a_handler_carries_the_conversation(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"payments": "memory://"})
    bus.route(Charge, "payments")

    def order(message: Order) -> None:
        bus.dispatch(Charge(order=message.order))

    bus.add_handler(order, Order)
    first = bus.dispatch(Order(order=1), correlation_id="c-1")
    payments = bus.transport("payments")
    assert isinstance(payments, MemoryTransport)
    [charge] = payments.sent
    assert (charge.correlation_id, charge.causation_id) == ("c-1", first.id)
