"""The public surface is curated: this list changes on purpose or not at all."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import pytest

import courier
from courier import errors

EXPECTED = [
    "AckPolicy",
    "Bus",
    "Capabilities",
    "ConfigurationError",
    "ConnectionLost",
    "CourierError",
    "DeliveryLimitExceeded",
    "Dsn",
    "Envelope",
    "ErrorDetails",
    "Event",
    "HandlerFailed",
    "Heartbeat",
    "InvalidMessage",
    "Listable",
    "Message",
    "MessageDecodingFailed",
    "MessageTooLarge",
    "Middleware",
    "Next",
    "NoHandlerForMessage",
    "PublishNotConfirmed",
    "QueueStats",
    "Received",
    "RecoverableError",
    "RetryPolicy",
    "RetryStrategy",
    "Route",
    "StopWorker",
    "Transport",
    "TransportError",
    "UnrecoverableError",
    "ValidationFailed",
    "Worker",
    "WorkerOptions",
    "current_envelope",
    "handler",
]


def test_all_is_exactly_the_curated_list() -> None:
    assert courier.__all__ == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_public_name_is_importable(name: str) -> None:
    assert getattr(courier, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from courier import {name}", namespace)
    assert namespace[name] is getattr(courier, name)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from courier import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == sorted(EXPECTED)


def test_every_error_is_public() -> None:
    assert set(errors.__all__) <= set(courier.__all__)


def test_the_error_tree() -> None:
    assert issubclass(courier.ConfigurationError, ValueError)
    assert issubclass(courier.MessageTooLarge, ValueError)
    assert issubclass(courier.ValidationFailed, ValueError)
    assert issubclass(courier.ConnectionLost, courier.TransportError)
    assert issubclass(courier.PublishNotConfirmed, courier.TransportError)
    assert issubclass(courier.DeliveryLimitExceeded, courier.UnrecoverableError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), courier.CourierError)
    assert not issubclass(courier.MessageDecodingFailed, courier.TransportError)


def test_version() -> None:
    assert courier.__version__ == importlib.metadata.version("courier-bus")


def test_the_package_is_typed() -> None:
    assert (importlib.resources.files("courier") / "py.typed").is_file()
