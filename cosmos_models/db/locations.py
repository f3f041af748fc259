"""Where the database is: every form of location checked in one place, and secrets masked.

Plain paths, `:memory:`, `sqlite:` URLs, `file:` URIs and `COSMOS_DATABASE_URL` all go
through `parse_location`; `..` segments, NUL bytes and unknown schemes are refused. Passwords and
secret-looking query parameters never reach a message (`redact`, `redact_url`).
"""

import re
from collections.abc import Iterable, Mapping
from os import PathLike, environ
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, quote_plus, unquote

from sqlalchemy import URL, make_url
from sqlalchemy import exc as sa_exc

from cosmos_models.errors import InvalidArgumentError

ENV_VAR: Final = "COSMOS_DATABASE_URL"


REPLICA_ENV_VAR: Final = "COSMOS_DATABASE_REPLICA_URLS"


DEFAULT_DATABASE_PATH: Final = Path("outputs") / "cosmos_workflow.db"


MEMORY: Final = ":memory:"


# Accepted spellings of each backend, mapped to the driver this package ships with.
_DRIVERS: Final[dict[str, str]] = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    # Async spellings name the same databases: each side (sync, ``cosmos_models.aio``) picks its
    # own driver, so one COSMOS_DATABASE_URL serves both.
    "sqlite+aiosqlite": "sqlite",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql+asyncmy": "mysql+pymysql",
    "mysql+aiomysql": "mysql+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
}


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.\-]*)://")  # "_": psycopg_async


_SEGMENT_SPLIT = re.compile(r"[/\\]")


def _has_traversal(text: str) -> bool:
    """True if ``text``, as given or URL-decoded up to 3 times, has a ``..`` segment."""
    seen = text
    for _ in range(4):
        if ".." in _SEGMENT_SPLIT.split(seen):
            return True
        decoded = unquote(seen)
        if decoded == seen:
            return False
        seen = decoded
    return True  # still changing after 3 decodings: refuse rather than guess


def _check_text(text: str) -> None:
    if not text.strip():
        raise InvalidArgumentError("database location must not be empty or whitespace")
    if "\x00" in text or "%00" in text:
        raise InvalidArgumentError("database location must not contain NUL bytes")


# SQLite URI parameters a location may carry (anything else, e.g. ``vfs``, is refused):
# ``mode=ro`` opens read-only, ``cache`` picks the page cache. ``uri=true`` is accepted and
# dropped: every SQLite file is opened through a URI built from the checked path.
_SQLITE_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "mode": frozenset({"ro", "rw", "rwc"}),
    "cache": frozenset({"shared", "private"}),
}


def _file_uri_path(uri: str) -> str:
    """The file path of a SQLite ``file:`` URI, percent-decoded as SQLite decodes it."""
    rest = uri[len("file:") :].split("?", 1)[0].split("#", 1)[0]
    if rest.startswith("//"):
        authority, _, path = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            raise InvalidArgumentError("a SQLite file: URI may name no host other than localhost")
        rest = "/" + path
    return unquote(rest)


def sqlite_file_url(database: str, options: Mapping[str, Any] | None = None) -> URL:
    """The one check every SQLite file location goes through: plain path or ``file:`` URI.

    Returns ``sqlite:///<absolute path>`` (plus ``mode``/``cache`` if given), or the in-memory
    URL. Raises ``ValueError`` for a NUL byte, a ``..`` segment (as given or percent-encoded),
    a host in a ``file:`` URI, or an unknown or invalid URI parameter.
    """
    query: dict[str, str] = {}
    for key, given in (options or {}).items():
        value = given[-1] if isinstance(given, tuple) else str(given)
        if key == "uri":
            continue
        allowed = _SQLITE_OPTIONS.get(key)
        if allowed is None:
            raise InvalidArgumentError(f"SQLite option {key!r} is not supported (use: mode, cache)")
        if value not in allowed:
            raise InvalidArgumentError(
                f"SQLite option {key}={value!r} must be one of {sorted(allowed)}"
            )
        query[key] = value
    path = database
    if database.startswith("file:"):
        _, _, inline = database.partition("?")
        path = _file_uri_path(database)
        if inline:
            extra = make_url(f"sqlite:///x?{inline}").query
            return sqlite_file_url(path, {**extra, **query})
    if path in ("", MEMORY):
        return URL.create("sqlite")
    _check_text(path)
    if _has_traversal(database) or _has_traversal(path):
        raise InvalidArgumentError("database path must not contain '..' segments (path traversal)")
    return URL.create("sqlite", database=str(Path(path).expanduser().absolute()), query=query)


def parse_location(location: "str | PathLike[str] | URL") -> URL:
    """Turn a file path, ``":memory:"``, a SQLite ``file:`` URI or a SQLAlchemy URL into a
    validated ``URL``; every SQLite file location ends as ``sqlite:///<absolute path>`` checked
    by ``sqlite_file_url``.

    Raises ``ValueError`` (naming the problem, never the password) for an empty location, a NUL
    byte, a ``..`` path segment, an unparsable URL or an unsupported backend.
    """
    if isinstance(location, URL):
        text = location.render_as_string(hide_password=False)
    elif isinstance(location, PathLike):
        text = str(location)
    else:
        text = location
    if not isinstance(text, str):
        raise InvalidArgumentError(
            f"database location must be a str or path, not {type(text).__name__}"
        )
    _check_text(text)
    if text.strip() == MEMORY:
        return URL.create("sqlite")
    match = _SCHEME.match(text)
    if match is None or text.startswith("file:"):
        return sqlite_file_url(text)
    return _parse_url(text, match.group(1).lower(), match.end())


def _parse_url(text: str, scheme: str, rest_at: int) -> URL:
    if scheme not in _DRIVERS:
        supported = ", ".join(sorted({d.split("+")[0] for d in _DRIVERS}))
        raise InvalidArgumentError(
            f"unsupported database URL scheme {scheme!r}; use one of: {supported}"
        )
    try:
        url = make_url(text)
    except (sa_exc.ArgumentError, ValueError):
        raise InvalidArgumentError(f"database URL for {scheme!r} could not be parsed") from None
    url = url.set(drivername=_DRIVERS[scheme])
    if url.get_backend_name() == "sqlite":
        if _has_traversal(text[rest_at:].split("?", 1)[0]):
            raise InvalidArgumentError(
                "database path must not contain '..' segments (path traversal)"
            )
        return sqlite_file_url(url.database or "", url.query)
    if url.database is not None and _has_traversal(url.database):
        raise InvalidArgumentError("database name must not contain '..' segments")
    _check_hosts(url)
    return url


# libpq's choices for which of several hosts to keep (``target_session_attrs``).
_SESSION_ATTRS: Final = frozenset(
    {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}
)


def _check_hosts(url: URL) -> None:
    """Several hosts (``?host=a:5432&host=b:5432``, or libpq's ``host=a,b``) are PostgreSQL's
    failover form: refused elsewhere, or together with a host in the URL's own host part."""
    hosts = url.query.get("host")
    if hosts is not None and url.get_backend_name() != "postgresql":
        raise InvalidArgumentError(
            "host= query parameters (several hosts) are supported on PostgreSQL only"
        )
    if hosts is not None and url.host:
        raise InvalidArgumentError(
            "give the hosts either in the URL's host part or as host= parameters"
        )
    attrs = url.query.get("target_session_attrs")
    if attrs is not None and (isinstance(attrs, tuple) or attrs not in _SESSION_ATTRS):
        raise InvalidArgumentError(
            f"target_session_attrs must be one of {sorted(_SESSION_ATTRS)}, got {attrs!r}"
        )


# A URL query parameter is a secret when its name, case-insensitively, contains one of these:
# password, sslpassword, passfile, passphrase, pwd, sslkey, api_key, token, secret, credentials,
# auth... (a path such as sslkey's is masked too: where a key lives is no one's business).
SECRET_PARAMETER_WORDS: Final = ("pass", "pwd", "secret", "token", "key", "credential", "auth")


MASK: Final = "***"


def is_secret_parameter(name: str) -> bool:
    """True if a URL query parameter named ``name`` carries a secret (see the words above)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAMETER_WORDS)


def _secrets(url: URL) -> list[str]:
    values = [str(url.password)] if url.password else []
    for key, value in url.query.items():
        if is_secret_parameter(key):
            values.extend(value if isinstance(value, tuple) else [value])
    return [value for value in values if value]


def redact(text: str, url: URL) -> str:
    """Return ``text`` with every secret of ``url`` (its password and the values of secret query
    parameters, raw and URL-encoded) replaced by ``***``."""
    # Longest first, so that a secret containing another is masked whole.
    for secret in sorted(_secrets(url), key=len, reverse=True):
        for form in sorted({secret, quote(secret, safe=""), quote_plus(secret)}, key=len)[::-1]:
            text = text.replace(form, MASK)
    return text


def redact_url(url: URL) -> str:
    """``url`` as a string for people: password and secret query parameters shown as ``***``."""
    masked = url.set(
        password=MASK if url.password else None,
        query={
            key: (MASK if is_secret_parameter(key) else value) for key, value in url.query.items()
        },
    )
    rendered = masked.render_as_string(hide_password=False).replace(quote(MASK, safe=""), MASK)
    return redact(rendered, url)


def get_database_url() -> str:
    """Return the configured database location.

    ``COSMOS_DATABASE_URL`` unchanged when set and valid, else the absolute path of
    ``outputs/cosmos_workflow.db``. Raises ``ValueError`` naming the variable when it is invalid.
    """
    raw = environ.get(ENV_VAR)
    if raw is None:
        return str(DEFAULT_DATABASE_PATH.absolute())
    try:
        parse_location(raw)
    except ValueError as exc:
        raise InvalidArgumentError(f"{ENV_VAR} is invalid: {exc}") from None
    return raw


def get_replica_urls() -> list[str]:
    """Return the read replica URLs of ``COSMOS_DATABASE_REPLICA_URLS`` (comma-separated).

    Empty when unset or blank. Raises ``ValueError`` naming the variable and the position of an
    invalid entry (never its password).
    """
    raw = environ.get(REPLICA_ENV_VAR, "")
    entries = [entry.strip() for entry in raw.split(",")] if raw.strip() else []
    for index, entry in enumerate(entries):
        try:
            parse_location(entry)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"{REPLICA_ENV_VAR} is invalid: entry {index + 1}: {exc}"
            ) from None
    return entries


class MaskedURL(URL):
    """A SQLAlchemy ``URL`` whose ``repr`` and ``str`` mask the password *and* the secret query
    parameters (``sslpassword``, ``token``…), which ``URL``'s own ``repr`` shows. Everything
    else is ``URL``'s: ``render_as_string(hide_password=False)`` still gives the whole URL, and
    ``set()``/``update_query_dict()`` keep the masking. ``DatabaseConnection.url`` is one."""

    __slots__ = ()

    @classmethod
    def of(cls, url: URL) -> "MaskedURL":
        """``url`` with the masked ``repr``."""
        return url if isinstance(url, cls) else cls._make(url)

    def difference_update_query(self, names: Iterable[str]) -> "MaskedURL":
        # URL's own builds a plain URL (URL.create) where it removes a key.
        return MaskedURL.of(super().difference_update_query(names))

    def __repr__(self) -> str:
        return redact_url(self)
