"""How to reach and log in to the broker a DSN names.

Part of the connection (:mod:`courier_stomp.connection`): the DSN's host,
port, vhost and credentials, the heart-beat and TLS settings, checked when
the transport is created so a bad DSN fails before any I/O. The password is
kept out of every ``repr``; only stomp.py receives it, and a filter on
stomp.py's logger keeps it out of its DEBUG log of the CONNECT frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from courier.errors import ConfigurationError
from courier.transports.dsn import Dsn
from courier_stomp.options import StompOptions

__all__ = ["Endpoint", "endpoint"]


class _HideCredentials(logging.Filter):
    """stomp.py logs every frame it sends at DEBUG, CONNECT's passcode included.

    (Its own masking expects a space after ``passcode:`` that it never
    writes.) This filter on stomp.py's logger replaces such a record's text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot render cannot leak either
            return True
        if "passcode" in text:
            record.msg = "a frame with a passcode (hidden by courier)"
            record.args = ()
        return True


logging.getLogger("stomp.py").addFilter(_HideCredentials())


@dataclass(frozen=True)
class Endpoint:
    """How to reach and log in to the broker; ``password`` goes only to stomp.py."""

    host: str
    port: int
    vhost: str | None
    username: str | None
    password: str | None = field(repr=False)
    heartbeat_ms: int
    connect_timeout: float
    connect_headers: Mapping[str, str]
    tls: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def endpoint(dsn: Dsn, options: StompOptions, connect_headers: Mapping[str, str]) -> Endpoint:
    """How to reach the broker the DSN names; the password goes only here."""
    tls = dsn.scheme == "stomp+ssl"
    for part in (dsn.username, dsn.password, dsn.path):
        if part and any(char in part for char in "\r\n\x00"):
            raise ConfigurationError(
                f"the {dsn.scheme}:// DSN's user, password or vhost has a line break or NUL, "
                "which a STOMP CONNECT frame cannot carry"
            )
    vhost = dsn.path[1:] if dsn.path.startswith("/") else dsn.path
    tls_options = None
    if tls:
        for path in (options.tls_ca_file, options.tls_cert_file, options.tls_key_file):
            if path is not None and not os.path.isfile(path):
                raise ConfigurationError(f"stomp+ssl:// TLS file not found: {path}")
        password = options.tls_key_password
        tls_options = {
            "ca_certs": options.tls_ca_file,
            "cert_file": options.tls_cert_file,
            "key_file": options.tls_key_file,
            "password": password.get_secret_value() if password is not None else None,
            "verify": options.tls_verify,
        }
    return Endpoint(
        host=dsn.host or "localhost",
        port=dsn.port or (61614 if tls else 61613),
        vhost=(vhost or "/") if options.flavor == "rabbitmq" else None,
        username=dsn.username,
        password=dsn.password,
        heartbeat_ms=round(options.heartbeat * 1000),
        connect_timeout=options.connect_timeout,
        connect_headers=connect_headers,
        tls=tls_options,
    )
