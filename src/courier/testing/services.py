"""Finding the brokers a test needs, and failing loudly when CI lacks one.

Tests take broker addresses from environment variables, with the local
services as defaults. When a broker cannot be reached the test is skipped
on a developer's machine, but fails under ``CI=true``: a CI run that
silently skipped the broker tests would prove nothing.
"""

from __future__ import annotations

import os
import socket

import pytest

__all__ = ["env", "in_ci", "require_tcp"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def env(name: str, default: str) -> str:
    """A broker address from the environment, or the local default."""
    return os.environ.get(name) or default


def require_tcp(service: str, host: str, port: int, *, timeout: float = 2.0) -> None:
    """Skip (locally) or fail (under CI) unless ``host:port`` accepts connections."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        message = f"{service} is not reachable on {host}:{port} ({error})"
    if in_ci():
        pytest.fail(f"{message}; CI needs it: .ci/run starts it", pytrace=False)
    pytest.skip(message)
