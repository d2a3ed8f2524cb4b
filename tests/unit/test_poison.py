"""Only a death with the handler running counts: slots, harvests and the guard.

Deaths here are real: a child process writes its slot and dies with
``os._exit``, as a handler that kills its worker does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

from courier import DeliveryLimitExceeded, Envelope, Message
from courier.poison import BACKSTOP_FACTOR, PoisonGuard
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.status import MemoryStatusStore, SqliteStatusStore
from courier.status.slots import HandlingSlot, harvest
from courier.transports.base import Capabilities, Received
from courier.transports.memory import MemoryTransport


class Job(Message):
    message_name: ClassVar[str] = "test.poison.job"

    n: int


def die_in_a_slot(directory: Path, message_id: str | None, *, end_first: bool = False) -> None:
    """A worker process that writes its slot and is killed (``os._exit``, no cleanup)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            slot = HandlingSlot(directory, "doomed")
            if message_id is not None:
                slot.begin(message_id)
            if end_first:
                slot.end()
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1


def received(transport: MemoryTransport, envelope: Envelope, delivery_count: int) -> Received:
    got = Received(transport, 1, transport.queue, delivery_count)
    got.envelope = envelope
    return got


@pytest.fixture
def transport() -> MemoryTransport:
    registry = MessageRegistry()
    registry.register(Job)
    return MemoryTransport(name="jobs", queue="jobs", serializer=JsonSerializer(registry))


def test_a_dead_workers_slot_is_one_death_of_its_message(tmp_path: Path) -> None:
    store = MemoryStatusStore(tmp_path)
    die_in_a_slot(tmp_path, "m-1")
    assert harvest(tmp_path, store, harvester="w") == ["m-1"]
    assert store.deaths("m-1") == 1
    # The slot is gone: harvesting again charges nothing more.
    assert harvest(tmp_path, store, harvester="w") == []
    die_in_a_slot(tmp_path, "m-1")
    harvest(tmp_path, store, harvester="w")
    assert store.deaths("m-1") == 2


def test_a_worker_that_died_between_handlers_blames_nobody(tmp_path: Path) -> None:
    store = MemoryStatusStore(tmp_path)
    die_in_a_slot(tmp_path, None)
    die_in_a_slot(tmp_path, "m-2", end_first=True)
    assert harvest(tmp_path, store, harvester="w") == []
    assert not store.has_deaths()
    assert list(tmp_path.glob("*.slot")) == []


def test_a_live_workers_slot_is_left_alone(tmp_path: Path) -> None:
    store = MemoryStatusStore(tmp_path)
    slot = HandlingSlot(tmp_path, "alive")
    slot.begin("m-3")
    try:
        assert harvest(tmp_path, store, harvester="w") == []
        assert slot.path.exists()
    finally:
        slot.close()
    assert not slot.path.exists()


def test_sqlite_keeps_deaths_for_every_process(tmp_path: Path) -> None:
    database = tmp_path / "courier.db"
    store = SqliteStatusStore(database)
    die_in_a_slot(store.slot_directory(), "m-4")
    assert harvest(store.slot_directory(), store, harvester="w") == ["m-4"]
    other = SqliteStatusStore(database)
    assert other.deaths("m-4") == 1
    assert other.has_deaths()
    other.forget("m-4")
    assert store.deaths("m-4") == 0
    store.close()
    other.close()


def test_the_guard_dead_letters_only_the_message_that_killed_its_workers(
    tmp_path: Path, transport: MemoryTransport
) -> None:
    store = MemoryStatusStore(tmp_path)
    guard = PoisonGuard(lambda: store, max_deliveries=2)
    killer, bystander = Envelope(Job(n=1)), Envelope(Job(n=2))
    for _ in range(2):
        die_in_a_slot(tmp_path, killer.id)
    guard.start("w")
    try:
        # The bystander was handed out as often (it was prefetched beside the
        # killer each time), but no worker died running it.
        guard.check(bystander, received(transport, bystander, 3))
        with pytest.raises(DeliveryLimitExceeded, match="killed the worker 2 times"):
            guard.check(killer, received(transport, killer, 3))
        # Dead-lettered: its deaths are forgotten, so a fixed retry runs again.
        assert store.deaths(killer.id) == 0
    finally:
        guard.stop()


def test_below_the_limit_it_runs_again(tmp_path: Path, transport: MemoryTransport) -> None:
    store = MemoryStatusStore(tmp_path)
    guard = PoisonGuard(lambda: store, max_deliveries=2)
    killer = Envelope(Job(n=1))
    die_in_a_slot(tmp_path, killer.id)
    guard.start("w")
    try:
        guard.check(killer, received(transport, killer, 2))
        assert store.deaths(killer.id) == 1
    finally:
        guard.stop()


def test_the_brokers_count_is_only_a_backstop(tmp_path: Path, transport: MemoryTransport) -> None:
    guard = PoisonGuard(lambda: MemoryStatusStore(tmp_path), max_deliveries=2)
    envelope = Envelope(Job(n=1))
    guard.check(envelope, received(transport, envelope, 2 * BACKSTOP_FACTOR))
    with pytest.raises(DeliveryLimitExceeded, match="delivered it 9 times"):
        guard.check(envelope, received(transport, envelope, 2 * BACKSTOP_FACTOR + 1))


def test_without_a_delivery_count_every_message_is_looked_up(
    tmp_path: Path, transport: MemoryTransport
) -> None:
    transport.capabilities = Capabilities(delivery_count=False)
    store = MemoryStatusStore(tmp_path)
    guard = PoisonGuard(lambda: store, max_deliveries=1)
    killer = Envelope(Job(n=1))
    guard.start("w")
    try:
        die_in_a_slot(tmp_path, killer.id)
        guard._next_harvest = 0.0  # the next look is due
        with pytest.raises(DeliveryLimitExceeded, match="killed the worker 1 times"):
            guard.check(killer, received(transport, killer, 1))
    finally:
        guard.stop()


def test_without_a_store_the_brokers_count_decides(transport: MemoryTransport) -> None:
    guard = PoisonGuard(lambda: None, max_deliveries=2)
    envelope = Envelope(Job(n=1))
    guard.start("w")
    guard.check(envelope, received(transport, envelope, 2))
    with pytest.raises(DeliveryLimitExceeded, match="delivered 3 times"):
        guard.check(envelope, received(transport, envelope, 3))
    guard.stop()


def test_the_slot_names_the_message_only_while_its_handler_runs(tmp_path: Path) -> None:
    store = MemoryStatusStore(tmp_path)
    guard = PoisonGuard(lambda: store)
    guard.start("w")
    try:
        [slot_file] = tmp_path.glob("*.slot")
        guard.begin("m-5")
        assert slot_file.read_bytes().startswith(b"m-5\0")
        guard.end()
        assert slot_file.read_bytes()[0] == 0
    finally:
        guard.stop()
    assert list(tmp_path.glob("*.slot")) == []
