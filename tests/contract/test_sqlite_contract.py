"""The transport contract on ``sqlite://``, with timings small enough for a quick run."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

from courier.testing.contract import TransportContract
from courier.transports.dsn import Dsn
from courier.transports.sqlite import SqliteTransport

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from courier.serializer import Serializer
    from courier.transports.base import Transport

#: A lease short enough that "an acknowledged message never comes back" is
#: watched for longer than the lease, in a little over a second.
LEASE = 1.0


class TestSqliteContract(TransportContract):
    delay = 0.5
    receive_timeout = 5.0
    redelivery_wait = LEASE * 1.2

    path: Path

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "contract.db"

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        dsn = Dsn.parse(
            f"sqlite:///{self.path}?queue={queue}&lease={LEASE}&poll_interval=0.02&busy_timeout=5"
        )
        return SqliteTransport.from_dsn(
            dsn.with_options(**options), name="contract", serializer=serializer
        )

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """A row written with plain SQL, as a foreign producer would."""
        row = (queue, headers.get("courier-id", ""), body, json.dumps(dict(headers)), time.time())
        with closing(sqlite3.connect(self.path)) as connection, connection:
            connection.execute(
                "INSERT INTO courier_messages (queue, message_id, body, headers, available_at)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
