"""Every secret option of every installed transport is a masked type, and never printed.

One test over all transports, adapters included: whatever a DSN option
holds that is secret (a password, a token, a key) is a pydantic SecretStr,
so ``repr(options)``, ``str(options)`` and a validation error never show it.
"""

from __future__ import annotations

import typing
from importlib.metadata import entry_points

import pydantic
import pytest

from courier.transports.dsn import TransportOptions, _is_secret_option
from courier.transports.registry import GROUP

SECRET = "s3cr3t-Value-9"


def all_option_models() -> list[type[TransportOptions]]:
    for point in entry_points(group=GROUP):
        point.load()  # imports the transport's modules, and so its options model
    found: list[type[TransportOptions]] = []
    pending = list(TransportOptions.__subclasses__())
    while pending:
        model = pending.pop()
        if model.__module__.startswith(("courier.", "courier_")):
            found.append(model)
        pending += model.__subclasses__()
    return sorted(found, key=lambda model: f"{model.__module__}.{model.__qualname__}")


MODELS = all_option_models()


def test_every_installed_adapter_was_found() -> None:
    modules = {model.__module__.split(".")[0] for model in MODELS}
    assert {"courier", "courier_amqp"} <= modules
    assert len(MODELS) >= 3


@pytest.mark.parametrize("model", MODELS, ids=[f"{m.__module__}.{m.__qualname__}" for m in MODELS])
def test_secret_options_are_masked(model: type[TransportOptions]) -> None:
    secrets = [name for name in model.model_fields if _is_secret_option(name)]
    for name in secrets:
        annotation = model.model_fields[name].annotation
        types = {annotation, *typing.get_args(annotation)}
        assert pydantic.SecretStr in types, f"{model.__qualname__}.{name} is not a SecretStr"
        try:
            options = model.model_validate({name: SECRET})
        except pydantic.ValidationError as error:  # other options are required
            shown = str(error)
        else:
            shown = repr(options) + str(options) + options.model_dump_json()
        assert SECRET not in shown
