"""AsyncDatabase: the database, engine options and rules of ``DatabaseConnection``, for asyncio.

SQLAlchemy's asyncio extension runs sync-style code over an async driver in a greenlet
(``AsyncSession`` works that way). An ``AsyncDatabase`` holds an ``AsyncEngine`` and a
``DatabaseConnection`` built on that engine's sync facade: the location checks, secret masking,
read-only handling and every connect/begin listener (SQLite pragmas, WAL, busy timeout,
``BEGIN IMMEDIATE``) are the sync class's own, not a copy. The service functions run unchanged
on that view inside ``greenlet_spawn``; each database round trip then awaits the async driver
(aiosqlite, psycopg 3 async, asyncmy), so the event loop keeps running while a query waits.
"""

from collections.abc import Callable
from os import PathLike
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, Unpack

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from cosmos_models.db.connection import ConnectionOptions, DatabaseConnection
from cosmos_models.db.locations import redact_url
from cosmos_models.errors import InvalidArgumentError

P = ParamSpec("P")
R = TypeVar("R")

# The async driver of each backend, by the sync driver ``parse_location`` settles on.
ASYNC_DRIVERS: Final[dict[str, str]] = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql+psycopg": "postgresql+psycopg",  # psycopg 3: one package, both sides
    "mysql+pymysql": "mysql+asyncmy",
    "mariadb+pymysql": "mariadb+asyncmy",
}


def async_url(url: URL) -> URL:
    """``url`` with the async driver of its backend (``sqlite`` → ``sqlite+aiosqlite`` …)."""
    return url.set(drivername=ASYNC_DRIVERS[url.drivername])


class AsyncBackedConnection(DatabaseConnection):
    """A ``DatabaseConnection`` whose engine is the sync facade of an ``AsyncEngine``.

    Everything the sync class decides (URL checks, engine options, listeners, sessions, error
    translation) applies unchanged; its sessions work only inside ``greenlet_spawn`` (what
    ``AsyncDatabase.run_sync`` does), where each round trip awaits the async driver.
    """

    async_engine: AsyncEngine

    def _new_engine(self, url: URL, **options: Any) -> Engine:
        self.async_engine = create_async_engine(async_url(url), **options)
        return self.async_engine.sync_engine

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"AsyncBackedConnection({redact_url(async_url(self.url))!r}, {state})"

    __str__ = __repr__


class AsyncDatabase:
    """A database for asyncio code: ``async with AsyncDatabase(url) as adb: …``.

    ``database_url`` and the keyword options are those of ``DatabaseConnection`` (a path,
    ``":memory:"``, a ``sqlite:``/``postgresql:``/``mysql:``/``mariadb:`` URL with a sync or an
    async driver name; ``None`` means ``get_database_url()``). It does not migrate: use
    ``await aio.init_database()`` or run ``cosmos-models db upgrade`` first. Raises what
    ``DatabaseConnection`` raises: ``ValueError`` naming the location's problem,
    ``DatabaseError`` for a read-only SQLite file that does not exist.
    """

    def __init__(
        self,
        database_url: "str | PathLike[str] | URL | None" = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self.sync_db = AsyncBackedConnection(database_url, **options)
        """The ``DatabaseConnection`` view over the same engine (use it inside ``run_sync``)."""

    @property
    def engine(self) -> AsyncEngine:
        """The ``AsyncEngine`` (for an app's own ``AsyncSession``s and Core statements)."""
        return self.sync_db.async_engine

    @property
    def url(self) -> URL:
        """The database URL with its async driver; its ``repr`` masks the password."""
        return async_url(self.sync_db.url)

    @property
    def read_only(self) -> bool:
        """True when opened read-only (asked for, ``mode=ro``, or a read-only file system)."""
        return self.sync_db.read_only

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self.sync_db._closed

    async def run_sync(
        self,
        fn: Callable[Concatenate[DatabaseConnection, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Await ``fn(sync_db, *args, **kwargs)``: sync code over the async driver, in a greenlet.

        Every twin in ``cosmos_models.aio`` is this call; an app can pass its own function using
        ``db.get_session()``. Raises what ``fn`` raises.
        """
        db = self.sync_db
        return await greenlet_spawn(lambda: fn(db, *args, **kwargs))

    async def close(self) -> None:
        """Close every pooled connection (and remove a ``:memory:`` database); idempotent.

        Later calls through this database raise ``RuntimeError("Connection is closed")``.
        """
        await greenlet_spawn(self.sync_db.close)

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"AsyncDatabase({redact_url(self.url)!r}, {state})"

    __str__ = __repr__


def sync_view(adb: Any, name: str = "db") -> DatabaseConnection:
    """The ``DatabaseConnection`` of ``adb``; ``ValueError`` naming ``name`` unless it is an
    ``AsyncDatabase``."""
    if not isinstance(adb, AsyncDatabase):
        raise InvalidArgumentError(f"{name}: must be an AsyncDatabase, got {type(adb).__name__}")
    return adb.sync_db


async def init_database(database_url: "str | PathLike[str] | URL | None" = None) -> AsyncDatabase:
    """Open the database (default: ``get_database_url()``) and bring its schema to head.

    The async ``init_database``: the same migration code path, run over the async driver.
    Raises ``ValueError`` naming ``database_url``, ``DatabaseError``/``MigrationError`` as the
    sync one does.
    """
    try:
        adb = AsyncDatabase(database_url)
    except ValueError as exc:
        raise InvalidArgumentError(f"database_url: {str(exc).removeprefix('location: ')}") from None
    try:
        await adb.run_sync(DatabaseConnection.create_tables)
    except BaseException:
        await adb.close()
        raise
    return adb
