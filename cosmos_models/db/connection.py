"""DatabaseConnection: where the database is, how to talk to it, and sessions that clean up.

One place decides, per backend, the engine options that make the spec's promises hold:

* SQLite files: foreign keys on for every pooled connection, WAL so readers never block the
  writer, a busy timeout, and ``BEGIN IMMEDIATE`` for sessions that may write (a deferred
  transaction that reads and then writes cannot wait for the lock: SQLite fails it at once
  with "database is locked"). Read-only sessions and plain engine connections begin deferred.
* ``:memory:``: a private SQLite file in WAL mode on a memory-backed filesystem (``/dev/shm``
  where there is one), removed on ``close()``, so sessions nest and readers see the committed
  state while a writer works, as on a file.
* PostgreSQL and MariaDB: ``pool_pre_ping`` and configurable pool sizes.
"""

import os
import re
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike, environ
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, quote_plus, unquote, urlencode

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from cosmos_models.errors import DatabaseError, IntegrityViolation
from cosmos_models.models.checks import check_bool, check_int
from cosmos_models.models.types import dumps_json

ENV_VAR: Final = "COSMOS_DATABASE_URL"
DEFAULT_DATABASE_PATH: Final = Path("outputs") / "cosmos_workflow.db"
MEMORY: Final = ":memory:"
# Where ``:memory:`` databases live when it exists and is writable (else the temp directory); only
# ever the parent of a private ``mkdtemp`` directory, so the shared location is safe.
MEMORY_FILESYSTEM: Final = Path("/dev/shm")  # noqa: S108

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
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
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
        raise ValueError("database location must not be empty or whitespace")
    if "\x00" in text or "%00" in text:
        raise ValueError("database location must not contain NUL bytes")


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
            raise ValueError("a SQLite file: URI may name no host other than localhost")
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
            raise ValueError(f"SQLite option {key!r} is not supported (use: mode, cache)")
        if value not in allowed:
            raise ValueError(f"SQLite option {key}={value!r} must be one of {sorted(allowed)}")
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
        raise ValueError("database path must not contain '..' segments (path traversal)")
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
        raise ValueError(f"database location must be a str or path, not {type(text).__name__}")
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
        raise ValueError(f"unsupported database URL scheme {scheme!r}; use one of: {supported}")
    try:
        url = make_url(text)
    except (sa_exc.ArgumentError, ValueError):
        raise ValueError(f"database URL for {scheme!r} could not be parsed") from None
    url = url.set(drivername=_DRIVERS[scheme])
    if url.get_backend_name() == "sqlite":
        if _has_traversal(text[rest_at:].split("?", 1)[0]):
            raise ValueError("database path must not contain '..' segments (path traversal)")
        return sqlite_file_url(url.database or "", url.query)
    if url.database is not None and _has_traversal(url.database):
        raise ValueError("database name must not contain '..' segments")
    return url


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
        raise ValueError(f"{ENV_VAR} is invalid: {exc}") from None
    return raw


class DatabaseConnection:
    """A database and its engine, with sessions that commit, roll back and close themselves.

    ``location`` is a file path, ``":memory:"`` or a SQLAlchemy URL (``sqlite:///…``,
    ``postgresql+psycopg://…``, ``mysql+pymysql://…``); ``None`` means ``get_database_url()``.
    ``sqlite_wal=False`` leaves a SQLite file's journal mode as it is (migrations use it, so that
    a refused or failed migration does not change a byte). ``read_only=True`` (or ``mode=ro`` in
    a SQLite location) never creates a file or directory and opens SQLite read-only, so a file
    on a read-only mount can be read. Raises ``ValueError`` for an invalid location and
    ``DatabaseError`` when a read-only SQLite file does not exist.
    """

    def __init__(
        self,
        location: "str | PathLike[str] | URL | None" = None,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_recycle: int = 1800,
        busy_timeout_ms: int = 30_000,
        sqlite_wal: bool = True,
        read_only: bool = False,
        echo: bool = False,
    ) -> None:
        check_int(pool_size, "pool_size", 1)
        check_int(max_overflow, "max_overflow", -1)  # -1: no limit, as SQLAlchemy reads it
        check_int(pool_recycle, "pool_recycle", -1)  # -1: never recycle
        check_int(busy_timeout_ms, "busy_timeout_ms", 0, 2**31 - 1)  # SQLite's int argument
        check_bool(sqlite_wal, "sqlite_wal")
        check_bool(echo, "echo")
        if location is None:
            self.url: URL = parse_location(get_database_url())
        else:
            try:
                self.url = parse_location(location)
            except ValueError as exc:
                raise ValueError(f"location: {exc}") from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_memory = self.is_sqlite and not self.url.database
        self.path: Path | None = (
            Path(self.url.database or "") if self.is_sqlite and not self.is_memory else None
        )
        # A file on a read-only file system is opened read-only whatever was asked: writes then
        # fail with "read-only" instead of SQLite failing to create its -shm/-journal files.
        self.read_only = (
            read_only
            or (self.is_sqlite and self.url.query.get("mode") == "ro")
            or (self.path is not None and _on_read_only_file_system(self.path))
        )
        if self.read_only and self.path is not None and not self.path.is_file():
            raise DatabaseError(f"database file {self.path} does not exist")
        self._closed = False
        # ``:memory:`` lives in a private directory (see _memory_url); removed on close or exit.
        self._memory_dir: Path | None = None
        self._remove_memory_dir: weakref.finalize[Any, Any] | None = None
        self._sqlite_wal = sqlite_wal
        self.engine: Engine = self._create_engine(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=pool_recycle,
            busy_timeout_ms=busy_timeout_ms,
            echo=echo,
        )
        # Sessions may write, so on SQLite they take the write lock when they begin; read-only
        # sessions and plain engine connections begin deferred (SQLite's default).
        self.SessionLocal = _session_factory(self.engine.execution_options(cosmos_writer=True))
        self._read_session = _session_factory(self.engine)

    # -- engine -------------------------------------------------------------------------------

    def _create_engine(
        self,
        *,
        pool_size: int,
        max_overflow: int,
        pool_recycle: int,
        busy_timeout_ms: int,
        echo: bool,
    ) -> Engine:
        if self.is_sqlite:
            return self._create_sqlite_engine(busy_timeout_ms=busy_timeout_ms, echo=echo)
        url = self.url
        if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        # Secret query parameters reach the driver as connect arguments (what the dialect does
        # with them anyway), so that the engine's URL, shown in reprs and logs, holds none.
        secrets = {
            key: value[-1] if isinstance(value, tuple) else value
            for key, value in url.query.items()
            if is_secret_parameter(key)
        }
        return create_engine(
            url.difference_update_query(secrets),
            connect_args=secrets,
            echo=echo,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=pool_recycle,
            json_serializer=dumps_json,
        )

    def _create_sqlite_engine(self, *, busy_timeout_ms: int, echo: bool) -> Engine:
        options: dict[str, Any] = {
            "echo": echo,
            "json_serializer": dumps_json,
            "connect_args": {"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        }
        url = self.url
        if self.is_memory:
            url = self._memory_url()
        else:
            assert self.path is not None
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            url = _sqlite_engine_url(self.path, self.url.query, read_only=self.read_only)
        engine = create_engine(url, **options)
        # The memory database always uses WAL: it is what lets readers work beside a writer.
        use_wal = (self._sqlite_wal or self.is_memory) and not self.read_only
        # Nothing survives the process anyway: no fsync for the memory database.
        synchronous = "OFF" if self.is_memory else "NORMAL"
        read_only = self.read_only

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
            # Hand transaction control to SQLAlchemy's "begin" event below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if read_only:
                cursor.execute("PRAGMA query_only=ON")
            if use_wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            writer = connection.get_execution_options().get("cosmos_writer", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine

    def _memory_url(self) -> URL:
        """Create the private directory of a ``:memory:`` database; return its file's URL.

        SQLite's own memory databases cannot give each session its own transaction: a single
        connection serialises sessions, and ``memdb``/shared-cache readers wait on a writer's
        lock or read its uncommitted rows. A WAL file on a memory-backed filesystem behaves like
        any SQLite file at close to memory speed. The directory is mode 0700 (``mkdtemp``) and
        is removed, with the -wal and -shm files, by ``close()`` or at interpreter exit.
        """
        shm = MEMORY_FILESYSTEM
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
        self._memory_dir = Path(tempfile.mkdtemp(prefix="cosmos-memory-", dir=parent))
        self._remove_memory_dir = weakref.finalize(
            self, _remove_directory, self._memory_dir, os.getpid()
        )
        return URL.create("sqlite", database=str(self._memory_dir / "memory.db"))

    # -- sessions -----------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Bring the schema to the newest revision with Alembic (see ``cosmos_models.db.migrate``).

        Whatever the database held (nothing, an older revision, an earlier-implementation
        database), it ends at head with the revision recorded. Raises ``MigrationError``.
        """
        self._check_open()
        from cosmos_models.db.migrate import upgrade

        upgrade(self)

    @contextmanager
    def get_session(self, *, read_only: bool = False) -> Iterator[Session]:
        """Yield a session: commit on a clean exit, roll back on an exception, always close.

        ``read_only=True`` opens a deferred transaction on SQLite (readers then never wait for
        a writer). Raises ``RuntimeError("Connection is closed")`` after ``close()``, and
        ``DatabaseError``/``IntegrityViolation`` for database errors (never with a password).
        """
        self._check_open()
        session = (self._read_session if read_only else self.SessionLocal)()
        try:
            yield session
            session.commit()
        except sa_exc.DBAPIError as exc:
            session.rollback()
            raise self.translate_error(exc) from None
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[Connection]:
        """Yield a Core connection (no transaction begun; the caller commits), then close it.

        Without ``read_only`` a SQLite transaction begun on it takes the write lock at once.
        Raises what ``get_session`` raises: ``RuntimeError`` when closed, ``DatabaseError``
        (one line, no secret, with a hint) for driver and connection errors.
        """
        self._check_open()
        try:
            with self.engine.connect() as connection:
                if not read_only:
                    connection.execution_options(cosmos_writer=True)
                yield connection
        except sa_exc.DBAPIError as exc:
            raise self.translate_error(exc) from None

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """Yield a Core connection in a write transaction: commit on a clean exit, else roll back.

        Raises like ``connect``.
        """
        with self.connect() as connection, connection.begin():
            yield connection

    def translate_error(self, exc: BaseException) -> DatabaseError:
        """Turn a driver error into a one-line ``DatabaseError`` with a hint and no secret."""
        original = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
        if isinstance(exc, sa_exc.IntegrityError):
            first_line = (str(original).strip().splitlines() or [""])[0]
            return IntegrityViolation(redact(f"{type(original).__name__}: {first_line}", self.url))
        where = str(self.path) if self.path is not None else redact_url(self.url)
        return DatabaseError(redact(describe_error(original, where), self.url))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Connection is closed")

    def close(self) -> None:
        """Release every pooled connection; later ``get_session()`` calls raise ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self.engine.dispose()
            if self._remove_memory_dir is not None:
                self._remove_memory_dir()

    def __enter__(self) -> "DatabaseConnection":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"DatabaseConnection({redact_url(self.url)!r}, {state})"

    __str__ = __repr__


def _remove_directory(path: Path, owner_pid: int) -> None:
    """Remove ``path`` and what it holds, in the process that made it only.

    A forked child inherits the finalizer and the object; its exit or garbage collection must
    not delete the parent's live database.
    """
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _on_read_only_file_system(path: Path) -> bool:
    """True if ``path``'s directory exists on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False  # no such directory yet: it will be created (or fail) when written


def _read_only_mode(path: Path) -> dict[str, str]:
    """How to open ``path`` read-only in the safest way the file allows.

    On a read-only file system ``immutable=1`` (SQLite cannot create the ``-shm`` file a WAL
    database needs there, and nobody can write it behind our back); a file or directory we may
    not write, ``mode=ro``; otherwise ``mode=rw`` (never creates the file) with ``PRAGMA
    query_only`` set by the opener, because a ``mode=ro`` reader of a WAL database cannot remove
    the ``-wal``/``-shm`` files it creates and would leave them behind.
    """
    if _on_read_only_file_system(path):
        return {"mode": "ro", "immutable": "1"}
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return {"mode": "ro"}
    return {"mode": "rw"}


def open_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """A plain ``sqlite3`` connection that cannot write ``path`` and leaves no file behind."""
    uri = f"file:{quote(str(path.absolute()), safe='/')}?" + urlencode(_read_only_mode(path))
    connection = sqlite3.connect(uri, uri=True)
    connection.execute("PRAGMA query_only=ON")
    return connection


def _sqlite_engine_url(path: Path, options: Mapping[str, Any], *, read_only: bool) -> URL:
    """The URI SQLite is opened with: the checked absolute path, percent-encoded, plus options
    (read-only as ``_read_only_mode`` decides)."""
    query = {key: str(value) for key, value in options.items() if key != "mode"}
    if read_only:
        query.update(_read_only_mode(path))
    elif "mode" in options:
        query["mode"] = str(options["mode"])
    return URL.create(
        "sqlite", database="file:" + quote(str(path), safe="/"), query={**query, "uri": "true"}
    )


_NOT_MIGRATED: Final = "not migrated: run cosmos-models db upgrade"
# Driver error codes: MySQL/MariaDB "no such table" / "unknown column", and its "read only".
_MYSQL_MISSING: Final = frozenset({1146, 1054})
_MYSQL_READ_ONLY: Final = frozenset({1290, 1792, 1836})
_MYSQL_CONNECT: Final = frozenset({1044, 1045, 1049, 2002, 2003, 2005, 2006, 2013})


def describe_error(error: BaseException, where: str) -> str:
    """One line naming a database problem, with what to do where that is known.

    ``where`` names the database (a path or a redacted URL). The caller redacts secrets.
    """
    text = (str(error).strip().splitlines() or [""])[0]
    lowered = text.lower()
    name = type(error).__name__
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    if "file is not a database" in lowered:
        return f"not a database: {where} ({text})"
    if (
        "no such table" in lowered
        or "no such column" in lowered
        or name in ("UndefinedTable", "UndefinedColumn")
        or code in _MYSQL_MISSING
    ):
        return f"{_NOT_MIGRATED} ({where}: {text})"
    if "readonly database" in lowered or "read-only" in lowered or code in _MYSQL_READ_ONLY:
        return f"read-only: {where} does not accept writes ({text})"
    if "unable to open database file" in lowered:
        return f"cannot open {where}: {text}"
    if (
        code in _MYSQL_CONNECT
        or "connection failed" in lowered
        or "connection refused" in lowered
        or "could not connect" in lowered
        or "connection to server" in lowered
        or "the connection is closed" in lowered
    ):
        return f"cannot connect to {where}: {text}"
    return f"{name}: {text}"


def sqlite_error(error: sqlite3.Error, path: Path) -> DatabaseError:
    """A ``sqlite3`` error met outside SQLAlchemy (backups, state reads) as a ``DatabaseError``."""
    return DatabaseError(describe_error(error, str(path)))


def _session_factory(bind: Engine) -> Any:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=bind, class_=Session, expire_on_commit=False)


def init_database(database_url: "str | PathLike[str] | URL | None" = None) -> DatabaseConnection:
    """Open the database (default: ``get_database_url()``) and bring its schema up to date.

    Raises ``ValueError`` naming ``database_url`` for an invalid location and ``DatabaseError``
    if it cannot be reached.
    """
    try:
        connection = DatabaseConnection(database_url)
    except ValueError as exc:
        raise ValueError(f"database_url: {str(exc).removeprefix('location: ')}") from None
    try:
        connection.create_tables()
    except BaseException:
        connection.close()
        raise
    return connection
