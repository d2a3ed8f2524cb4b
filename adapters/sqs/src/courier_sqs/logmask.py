"""Secrets out of boto3's own debug logs.

At DEBUG, botocore logs every request it signs: its headers (the access
key id in ``Authorization``, a session token in ``X-Amz-Security-Token``)
and its canonical request. courier's rule is that no secret reaches a log
line at any level, so every transport registers its secrets here, and a
filter on botocore's and urllib3's loggers masks them. A filter only runs
for records that are emitted, so it costs nothing unless DEBUG is on.
"""

from __future__ import annotations

import logging
import threading

from courier.transports.dsn import MASK

__all__ = ["hide"]

_PREFIXES = ("boto3", "botocore", "urllib3", "s3transfer")


class _Mask(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        #: Longest first, so a secret containing another is masked whole.
        self.secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            text = record.getMessage()
            masked = text
            for secret in secrets:
                masked = masked.replace(secret, MASK)
            if masked != text:
                record.msg, record.args = masked, ()
        return True


_FILTER = _Mask()
_lock = threading.Lock()


def hide(*secrets: str | None) -> None:
    """Mask ``secrets`` in every record of boto3's, botocore's and urllib3's loggers."""
    with _lock:
        known = set(_FILTER.secrets) | {secret for secret in secrets if secret}
        _FILTER.secrets = tuple(sorted(known, key=len, reverse=True))
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith(_PREFIXES):
                found = logging.getLogger(name)
                if _FILTER not in found.filters:
                    found.addFilter(_FILTER)
