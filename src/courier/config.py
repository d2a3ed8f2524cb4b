"""Configuration: ``courier.toml`` or ``[tool.courier]``, overridden by ``COURIER_*``.

::

    # courier.toml
    app = "myapp.messaging:bus"            # where the handlers are
    failure_transport = "failed"           # default: failed, in courier.db

    [transports]
    email = "sqlite:///courier.db?queue=email"
    events = "amqp://guest:guest@localhost:5672/%2f"

    [routing]
    "email.send" = "email"                 # a command -> a transport
    "user.registered" = { transport = "events", topic = "users" }

    [retry]                                # courier's defaults, per transport or type
    max_retries = 5
    [retry.transports.email]
    delay = 10

Environment variables override the file: ``COURIER_APP``,
``COURIER_TRANSPORTS__EMAIL=amqp://...`` (``__`` separates levels).

With nothing configured courier still works: one SQLite file,
``courier.db``, holds a ``default`` transport that every message is routed
to, and the ``failed`` and ``invalid`` queues.

A bad configuration fails at startup with one line naming the key.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from courier.bus import Bus
from courier.errors import ConfigurationError
from courier.middleware.acknowledge import AckPolicy
from courier.middleware.retry import RetryPolicy, RetryStrategy
from courier.serializer import DEFAULT_MAX_BODY
from courier.topology import require_listable
from courier.transports.dsn import Dsn

logger = logging.getLogger("courier.config")

__all__ = [
    "DEFAULT_DATABASE",
    "CourierSettings",
    "RetrySettings",
    "RouteSettings",
    "StrategySettings",
    "build_bus",
    "configuration_file",
    "find_config_file",
    "load_settings",
]

#: The SQLite file used when nothing else is configured.
DEFAULT_DATABASE = "courier.db"
DEFAULT_TRANSPORT = "default"
DEFAULT_FAILURE_TRANSPORT = "failed"
DEFAULT_INVALID_TRANSPORT = "invalid"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategySettings(_Strict):
    """One retry strategy; unset fields keep courier's defaults (see retry.py)."""

    max_retries: int | None = Field(default=None, ge=0)
    delay: float | None = Field(default=None, ge=0)
    multiplier: float | None = Field(default=None, ge=1)
    max_delay: float | None = Field(default=None, ge=0)
    jitter: float | None = Field(default=None, ge=0, le=1)

    def strategy(self, base: RetryStrategy | None = None) -> RetryStrategy:
        values = self.model_dump(exclude_none=True)
        return RetryStrategy(**values) if base is None else replace(base, **values)


class RetrySettings(StrategySettings):
    """The default strategy, and overrides per transport and per message type."""

    transports: dict[str, StrategySettings] = Field(default_factory=dict)
    messages: dict[str, StrategySettings] = Field(default_factory=dict)

    def policy(self) -> RetryPolicy:
        default = StrategySettings(
            **self.model_dump(exclude={"transports", "messages"}, exclude_none=True)
        ).strategy()
        return RetryPolicy(
            default=default,
            transports={name: s.strategy(default) for name, s in self.transports.items()},
            message_types={name: s.strategy(default) for name, s in self.messages.items()},
        )


class RouteSettings(_Strict):
    """Where one message type goes: a transport, and a queue or a topic."""

    transport: str
    queue: str | None = None
    topic: str | None = None
    subscriptions: list[str] = Field(default_factory=list)


class CourierSettings(BaseSettings):
    """Everything courier reads from files and the environment."""

    model_config = SettingsConfigDict(
        env_prefix="COURIER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    #: The import string of the application's Bus: ``"module:attribute"``.
    app: str | None = None
    #: Transports by name: a DSN each.
    transports: dict[str, str] = Field(default_factory=dict)
    #: Message wire name (or ``"*"``) -> transport name, or a route table.
    routing: dict[str, str | RouteSettings] = Field(default_factory=dict)
    #: Where messages that failed for good are kept (must be listable).
    failure_transport: str | None = DEFAULT_FAILURE_TRANSPORT
    #: Where undecodable messages are kept; default: ``invalid`` beside ``failed``.
    invalid_transport: str | None = None
    #: Deliveries of one message before it is dead-lettered unhandled.
    max_deliveries: int = Field(default=10, ge=1)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    #: The SQLite file for the defaults above.
    database: str = DEFAULT_DATABASE
    #: Where workers count the deaths of handlers and keep their status:
    #: ``sqlite:///path.db``, ``redis://...`` (courier-bus-redis) or ``memory://``;
    #: default: the ``database`` file.
    status_store: str | None = None
    #: What the worker does with a message that failed for good (see AckPolicy).
    ack_policy: AckPolicy = AckPolicy.REJECT_ON_ERROR
    #: Validate messages again at dispatch (for ``model_construct``-built ones);
    #: ``validate`` in files and ``COURIER_VALIDATE`` (pydantic keeps that name).
    validate_messages: bool = False
    #: The largest body, in bytes, courier sends and decodes.
    max_body: int = Field(default=DEFAULT_MAX_BODY, gt=0)

    @field_validator("app")
    @classmethod
    def _app_shape(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or value.startswith(":")):
            raise ValueError("must look like 'package.module:bus'")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment wins.
        return (env_settings, init_settings)

    def effective_transports(self) -> dict[str, str]:
        """The configured transports plus the SQLite defaults courier fills in."""
        found = dict(self.transports)
        database = self.database
        if not found:
            found[DEFAULT_TRANSPORT] = f"sqlite:///{database}?queue={DEFAULT_TRANSPORT}"
        if self.failure_transport == DEFAULT_FAILURE_TRANSPORT and "failed" not in found:
            found[DEFAULT_FAILURE_TRANSPORT] = (
                f"sqlite:///{database}?queue={DEFAULT_FAILURE_TRANSPORT}"
            )
        if self.invalid_transport is None and self.failure_transport == DEFAULT_FAILURE_TRANSPORT:
            found.setdefault(
                DEFAULT_INVALID_TRANSPORT, f"sqlite:///{database}?queue={DEFAULT_INVALID_TRANSPORT}"
            )
        return found

    def effective_routing(self) -> dict[str, RouteSettings]:
        routes = {
            name: route if isinstance(route, RouteSettings) else RouteSettings(transport=route)
            for name, route in self.routing.items()
        }
        if not self.transports and not routes:
            routes["*"] = RouteSettings(transport=DEFAULT_TRANSPORT)
        return routes

    def effective_invalid_transport(self) -> str | None:
        if self.invalid_transport is not None:
            return self.invalid_transport
        if self.failure_transport == DEFAULT_FAILURE_TRANSPORT:
            return DEFAULT_INVALID_TRANSPORT
        return self.failure_transport


def find_config_file(start: Path | None = None) -> Path | None:
    """The configuration a command in ``start`` means: as git and ruff find theirs.

    In ``start`` (the working directory) and then each parent up to the root,
    the first ``courier.toml``, or ``pyproject.toml`` with a ``[tool.courier]``
    table, wins; a pyproject without that table is passed over.
    """
    directory = (start or Path.cwd()).resolve()
    for folder in (directory, *directory.parents):
        candidate = folder / "courier.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _has_courier_table(pyproject):
            return pyproject
    return None


def _has_courier_table(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(data.get("tool"), dict) and "courier" in data["tool"]


def anchored(dsn: str | Dsn, base: Path) -> Dsn:
    """``dsn`` with a relative SQLite file made absolute against ``base``.

    A path in a configuration file means the file's folder, not wherever the
    command happens to run, so producers and workers started anywhere share
    one database.
    """
    parsed = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
    if parsed.scheme != "sqlite" or parsed.host:
        return parsed
    relative = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    if not relative or relative == ":memory:" or relative.startswith(("/", "~")):
        return parsed
    absolute = (base / relative).resolve()
    return Dsn("sqlite", path="/" + str(absolute), options=dict(parsed.options))


def _shown(path: Path) -> str:
    """``path`` as the user would write it: relative to the working directory if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _file_data(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"{_shown(path)}: cannot be read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{_shown(path)}: not valid TOML ({error})") from None
    if path.name == "pyproject.toml":
        section = data.get("tool", {}).get("courier", {})
        if not isinstance(section, dict):
            raise ConfigurationError(f"{_shown(path)}: [tool.courier] must be a table")
        return section
    return data


#: The file the running ``courier`` command was told to read (``--config``), so
#: the app's own ``Bus.from_config()`` reads the same one. A context variable,
#: not ``$COURIER_CONFIG``: it must not leak into processes the command starts.
_chosen_file: ContextVar[Path | None] = ContextVar("courier_config_file", default=None)


@contextmanager
def configuration_file(path: str | Path) -> Iterator[Path]:
    """Within this block, ``load_settings()`` without a path reads ``path``."""
    chosen = Path(path).resolve()
    token = _chosen_file.set(chosen)
    try:
        yield chosen
    finally:
        _chosen_file.reset(token)


#: Settings whose name in files and the environment is not the field's.
_SETTING_NAMES = {"validate_messages": "validate"}


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """``validate`` (and ``COURIER_VALIDATE``) as the field pydantic can name."""
    data = dict(data)
    if "validate" in data:
        data["validate_messages"] = data.pop("validate")
    env = os.environ.get("COURIER_VALIDATE")
    if env is not None and "COURIER_VALIDATE_MESSAGES" not in os.environ:
        data["validate_messages"] = env
    return data


def load_settings(
    path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None
) -> tuple[CourierSettings, Path | None]:
    """The settings, and the file they came from (None: environment only)."""
    if path is None:
        path = _chosen_file.get()
    if path is None and os.environ.get("COURIER_CONFIG"):
        path = os.environ["COURIER_CONFIG"]
    file = Path(path) if path is not None else find_config_file()
    if path is not None and (file is None or not file.is_file()):
        raise ConfigurationError(f"configuration file {path} does not exist")
    data = _file_data(file) if file is not None else {}
    if overrides:
        data = {**data, **overrides}
    data = _renamed(data)
    where = f"{_shown(file)}: " if file is not None else ""
    try:
        settings = CourierSettings(**data)
    except SettingsError as error:
        # Malformed JSON in a COURIER_* variable; the message names the field only.
        raise ConfigurationError(f"COURIER_* environment: {error}") from None
    except ValidationError as error:
        detail = error.errors(include_input=False, include_url=False)[0]
        key = ".".join(str(part) for part in detail["loc"]) or "<root>"
        key = _SETTING_NAMES.get(key, key)
        if detail["type"] == "extra_forbidden":
            raise ConfigurationError(f"{where}{key}: unknown setting") from None
        raise ConfigurationError(f"{where}{key}: {detail['msg']}") from None
    if file is None and not settings.transports:
        _announce_the_default(settings.database)
    return settings, file


_announced: set[Path] = set()


def _announce_the_default(database: str) -> None:
    """Say once which file the embedded default uses, so nobody guesses."""
    path = (Path.cwd() / database).resolve()
    if path in _announced:
        return
    _announced.add(path)
    logger.warning(
        "no courier.toml (or pyproject.toml with [tool.courier]) in %s or its parents: "
        "using the embedded default, %s",
        Path.cwd(),
        path,
    )


def build_bus(
    settings: CourierSettings, bus: Bus | None = None, *, base: Path | None = None
) -> Bus:
    """Configure ``bus`` (a new one by default) from ``settings``.

    Every transport is opened, every route checked against the transports,
    and the dead-letter transports must be able to list what they keep; the
    first problem raises :class:`ConfigurationError` naming its key.
    Relative SQLite paths are taken from ``base``: the configuration file's
    folder (the working directory when there is no file).
    """
    base = (base or Path.cwd()).resolve()
    if bus is None:
        bus = Bus(
            max_deliveries=settings.max_deliveries,
            retry=settings.retry.policy(),
            ack_policy=settings.ack_policy,
            validate=settings.validate_messages,
            max_body=settings.max_body,
        )
    bus.max_deliveries = settings.max_deliveries
    bus.retry_policy = settings.retry.policy()
    bus.configure(
        ack_policy=settings.ack_policy,
        validate=settings.validate_messages,
        max_body=settings.max_body,
    )
    transports = settings.effective_transports()
    for name, dsn in transports.items():
        if name in bus.transports:
            continue
        try:
            bus.add_transport(name, anchored(dsn, base))
        except ConfigurationError as error:
            raise ConfigurationError(f"transports.{name}: {error}") from None
    for message_type, route in settings.effective_routing().items():
        if route.transport not in bus.transports:
            known = ", ".join(sorted(bus.transports))
            raise ConfigurationError(
                f"routing.{message_type}: unknown transport {route.transport!r} (known: {known})"
            )
        bus.route(
            message_type,
            route.transport,
            queue=route.queue,
            topic=route.topic,
            subscriptions=route.subscriptions,
        )
    failure = settings.failure_transport
    invalid = settings.effective_invalid_transport()
    stores: tuple[tuple[str, str | None], ...] = (
        ("failure_transport", failure),
        ("invalid_transport", invalid),
    )
    for key, store in stores:
        if store is None:
            continue
        if store not in bus.transports:
            raise ConfigurationError(f"{key}: unknown transport {store!r}")
        require_listable(bus.transport(store), f"{key}: transport {store!r}")
    bus.set_dead_letters(failure, invalid)
    if settings.status_store is not None or bus.status_store is None:
        try:
            status = anchored(settings.status_store or f"sqlite:///{settings.database}", base)
            bus.use_status_store(status.render(reveal=True))
        except ConfigurationError as error:
            raise ConfigurationError(f"status_store: {error}") from None
    for name in settings.retry.transports:
        if name not in bus.transports:
            raise ConfigurationError(f"retry.transports.{name}: unknown transport {name!r}")
    for name in sorted({route.transport for route in bus.router.routes().values()}):
        transport = bus.transport(name)
        if transport.capabilities.in_process:
            continue
        try:
            bus.check_retry_delays(transport)
        except ConfigurationError as error:
            raise ConfigurationError(f"retry: {error}") from None
    return bus
