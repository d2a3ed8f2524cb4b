"""DSN parsing and masking.

A DSN names a broker, its credentials and the transport's options in one
string: ``amqp://guest:secret@localhost:5672/%2f?queue=email&prefetch=50``.
The password is the one part that must never be seen again: ``repr``,
``str``, every error raised here and every log line show ``***`` instead,
in plain and in URL-encoded form. Options are checked against the
transport's own pydantic model, so a misspelt option is an error rather
than a silently ignored setting.
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from courier.errors import ConfigurationError

__all__ = ["Dsn", "TransportOptions"]

MASK = "***"

_SECRET_OPTION_WORDS = ("password", "secret", "token", "credential", "passphrase")

OptionsT = TypeVar("OptionsT", bound="TransportOptions")


class TransportOptions(BaseModel):
    """Base for a transport's DSN options: unknown names are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _is_secret_option(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_OPTION_WORDS) or lowered.endswith("key")


class Dsn:
    """A parsed DSN whose password is kept out of every rendering."""

    __slots__ = (
        "_password",
        "_raw_path",
        "host",
        "hosts",
        "options",
        "path",
        "port",
        "scheme",
        "username",
    )

    def __init__(
        self,
        scheme: str,
        *,
        username: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        path: str = "",
        options: dict[str, str] | None = None,
        raw_path: str | None = None,
        hosts: tuple[tuple[str, int | None], ...] = (),
    ) -> None:
        self.scheme = scheme
        self.username = username
        self._password = password
        self.host = host
        self.port = port
        #: Every ``host[:port]`` of a multi-host DSN (``h1:7000,h2:7001``), the
        #: first one included; empty for a single host. ``host``/``port`` are
        #: the first one's.
        self.hosts = hosts
        self.path = path
        # The path as written (``/%2f`` for AMQP's default vhost), for rendering.
        self._raw_path = raw_path
        self.options: dict[str, str] = dict(options or {})

    @classmethod
    def parse(cls, text: str) -> Dsn:
        """Parse ``text``; errors describe it without ever quoting it whole."""
        if not isinstance(text, str) or "://" not in text:
            raise ConfigurationError(
                "a DSN looks like scheme://[user:password@]host[:port]/path?options"
            )
        scheme = text.split("://", 1)[0].lower()
        text, hosts = _split_hosts(text, scheme)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as error:
            reason = "port" if "port" in str(error).lower() else "syntax"
            raise ConfigurationError(
                f"the {scheme}:// DSN has an invalid {reason} (URL-encode '/', '?', '#' "
                "and '@' in a password as %2F, %3F, %23, %40)"
            ) from None
        # A password with an unencoded '/', '?', '#' or '@' spills into the
        # port, path, query or fragment, where it would be shown: refuse it
        # without quoting any of it.
        if parts.fragment or "#" in text:
            raise ConfigurationError(
                f"the {scheme}:// DSN has a '#': URL-encode it as %23 (in a password too)"
            )
        if parts.username is None and ("@" in parts.path or "@" in parts.query):
            raise ConfigurationError(
                f"the {scheme}:// DSN has an '@' after its host: URL-encode '@' as %40, and "
                "'/', '?' or '#' in a password as %2F, %3F, %23"
            )
        options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in options:
                raise ConfigurationError(f"option {key!r} appears twice in the {scheme}:// DSN")
            options[key] = value
        return cls(
            scheme,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=unquote(parts.path),
            options=options,
            raw_path=parts.path,
            hosts=((parts.hostname or "", port), *hosts) if hosts else (),
        )

    @property
    def password(self) -> str | None:
        """The password, for handing to a client library; never log it."""
        return self._password

    @property
    def has_password(self) -> bool:
        return self._password is not None

    def secrets(self) -> list[str]:
        """Every secret in this DSN, in each form it may be printed in."""
        found = [self._password] if self._password else []
        found += [value for key, value in self.options.items() if value and _is_secret_option(key)]
        forms: list[str] = []
        for secret in found:
            forms += [secret, quote(secret, safe=""), quote(secret)]
        return sorted(set(forms), key=len, reverse=True)

    def render(self, *, reveal: bool = False) -> str:
        """The DSN as text; masked unless ``reveal`` (for client libraries only)."""
        auth = ""
        if self.username is not None or self._password is not None:
            auth = quote(self.username or "", safe="")
            if self._password is not None:
                auth += ":" + (quote(self._password, safe="") if reveal else MASK)
            auth += "@"
        host = ",".join(
            _render_host(name, port) for name, port in self.hosts or [(self.host or "", self.port)]
        )
        path = self._raw_path if self._raw_path is not None else quote(self.path, safe="/:")
        query = "&".join(
            f"{quote(key, safe='')}="
            + (MASK if _is_secret_option(key) and not reveal and value else quote(value, safe=""))
            for key, value in self.options.items()
        )
        return f"{self.scheme}://{auth}{host}{path}" + (f"?{query}" if query else "")

    def mask(self, text: str) -> str:
        """``text`` with every secret of this DSN replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def option_model(self, model: type[OptionsT]) -> OptionsT:
        """The options validated against ``model``; unknown names are errors."""
        try:
            return model.model_validate(self.options)
        except ValidationError as error:
            problems = []
            for detail in error.errors(include_input=False, include_url=False):
                name = ".".join(str(part) for part in detail["loc"])
                if detail["type"] == "extra_forbidden":
                    known = ", ".join(sorted(model.model_fields)) or "none"
                    problems.append(f"unknown option {name!r} (known: {known})")
                else:
                    problems.append(f"option {name!r}: {detail['msg']}")
            raise ConfigurationError(f"{'; '.join(problems)} in DSN {self}") from None

    def with_options(self, **options: str) -> Dsn:
        """A copy with ``options`` set (used by tests to shrink timings)."""
        return Dsn(
            self.scheme,
            username=self.username,
            password=self._password,
            host=self.host,
            port=self.port,
            path=self.path,
            options={**self.options, **options},
            raw_path=self._raw_path,
            hosts=self.hosts,
        )

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"Dsn({self.render()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dsn) and self.render(reveal=True) == other.render(reveal=True)

    def __hash__(self) -> int:
        return hash(self.render())


def _split_hosts(text: str, scheme: str) -> tuple[str, tuple[tuple[str, int | None], ...]]:
    """``text`` with only the first of several comma-separated hosts, and the others.

    ``redis+cluster://u:p@h1:7000,h2:7001/0`` names seed nodes; ``urlsplit``
    would read ``7000,h2:7001`` as the port.
    """
    rest = text.split("://", 1)[1]
    end = min((rest.find(mark) for mark in "/?#" if mark in rest), default=len(rest))
    netloc = rest[:end]
    auth, _, located = netloc.rpartition("@")
    if "," not in located:
        return text, ()
    first, *others = located.split(",")
    hosts: list[tuple[str, int | None]] = []
    for other in others:
        try:
            parts = urlsplit(f"//{other}")
            port = parts.port
        except ValueError:
            raise ConfigurationError(f"the {scheme}:// DSN has an invalid host list") from None
        if not parts.hostname or parts.username is not None or parts.path:
            raise ConfigurationError(f"the {scheme}:// DSN has an invalid host list")
        hosts.append((parts.hostname, port))
    head = f"{text.split('://', 1)[0]}://{auth}{'@' if auth else ''}{first}"
    return head + rest[end:], tuple(hosts)


def _render_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
