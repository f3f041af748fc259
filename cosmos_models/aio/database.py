"""AsyncDatabase: the database, engine options and rules of ``DatabaseConnection``, for asyncio.

A call (a twin, ``run_sync``) runs the sync service function unchanged, whole, on a
``DatabaseConnection``: the location checks, secret masking, read-only handling and every
connect/begin listener (SQLite pragmas, WAL, busy timeout, ``BEGIN IMMEDIATE``) are the sync
class's own, not a copy. Where it runs depends on the backend (``THREADED_BACKENDS``): in a
worker thread over the sync driver, so the event loop keeps running while the call waits; or,
as SQLAlchemy's ``AsyncSession`` does, in ``greenlet_spawn`` on the sync facade of an
``AsyncEngine``, each round trip awaiting the async driver (asyncmy). On SQLite in WAL mode the
short calls start on the loop thread itself and move to a thread when they would wait
(``inline.py``).
"""

import asyncio
from collections.abc import Callable
from os import PathLike
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, Unpack

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from cosmos_models.aio.inline import (
    Checkpoints,
    attempt_inline,
    is_small,
    pool_capacity,
    pool_has_room,
    prepare_inline,
    should_yield,
)
from cosmos_models.aio.threads import WorkerThreads
from cosmos_models.db.connection import ConnectionOptions, DatabaseConnection
from cosmos_models.db.locations import get_database_url, parse_location, redact_url
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


# The backends whose calls run whole in a worker thread over the sync driver: one hand-off per
# call instead of one pass through the event loop per round trip. Measured (bench/bench_async.py,
# README "Async"): aiosqlite hops to its own thread for every statement (0.4x the sync
# throughput); psycopg's async wait costs each round trip about twice the sync one (raw
# psycopg, BEGIN/SELECT/COMMIT: 0.45-0.55x sync on asyncio), a thread hop about one round trip.
# asyncmy keeps up with PyMySQL (0.86-0.92x): MariaDB stays on the driver's own async path.
THREADED_BACKENDS: Final = frozenset({"sqlite", "postgresql"})


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

    How calls run: on SQLite and PostgreSQL in a worker thread over the sync driver (one
    hand-off per call; see ``THREADED_BACKENDS`` for the measurements), at most ``pool_size +
    max_overflow`` at a time, the pool's limit anyway; a cancelled call that has started
    finishes in its thread. On a SQLite database in WAL mode, short reads and writes first run
    on the loop thread and never wait there (``run_short``). On MariaDB in a greenlet over
    asyncmy, where cancelling interrupts the call at its next round trip.
    """

    def __init__(
        self,
        database_url: "str | PathLike[str] | URL | None" = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self._options = options
        self._async_view: AsyncBackedConnection | None = None
        self._threads: WorkerThreads | None = None
        self._checkpoints: Checkpoints | None = None  # set: short calls may run inline
        self._closing: asyncio.Future[None] | None = None  # the close() under way or done
        if _backend(database_url) in THREADED_BACKENDS:
            self.sync_db: DatabaseConnection = DatabaseConnection(database_url, **options)
            db = self.sync_db
            workers = options.get("pool_size", 5) + max(options.get("max_overflow", 10), 0)
            inline = db.is_sqlite and not db.read_only and (db.sqlite_wal or db.is_memory)
            capacity = pool_capacity(db)
            if inline and capacity is not None:
                # The loop thread's calls need a pooled connection too: one left for them.
                workers = max(1, capacity - 1)
            self._threads = WorkerThreads(workers, "cosmos-db")
            if inline:
                commits = prepare_inline(db, options.get("busy_timeout_ms", 30_000))
                self._checkpoints = Checkpoints(db, commits)
        else:
            self._async_view = AsyncBackedConnection(database_url, **options)
            self.sync_db = self._async_view
        """The ``DatabaseConnection`` the calls run on (use it inside ``run_sync`` only)."""

    @property
    def engine(self) -> AsyncEngine:
        """An ``AsyncEngine`` on this database, with the sync engine's options and listeners
        (for an app's own ``AsyncSession``s; where calls run in threads, made on first use)."""
        if self._async_view is None:
            db = self.sync_db
            self._async_view = AsyncBackedConnection(
                db.engine.url if db.is_memory else db.url, **self._options
            )
        return self._async_view.async_engine

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
        """Await ``fn(sync_db, *args, **kwargs)`` run as the class docstring says.

        Every twin in ``cosmos_models.aio`` is this call; an app can pass its own function using
        ``db.get_session()``. Raises what ``fn`` raises.
        """
        db = self.sync_db
        if self._threads is None:
            return await greenlet_spawn(lambda: fn(db, *args, **kwargs))
        if self.closed:  # its threads are gone; say what the sync side says
            raise RuntimeError("Connection is closed")
        try:
            return await self._threads.run(lambda: fn(db, *args, **kwargs))
        finally:
            if self._checkpoints is not None and not self.closed:
                self._checkpoints.after_call()

    async def run_short(
        self,
        write: bool,
        fn: Callable[Concatenate[DatabaseConnection, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """``run_sync`` for a call known to be short: a bounded read, or (``write``) a bounded
        write in one transaction (``twins.py`` says which). On a SQLite database in WAL mode,
        asking for few items, it first runs on the loop thread, never waiting there
        (``cosmos_models.aio.inline``); anywhere else, or when it would wait, as ``run_sync``."""
        checkpoints = self._checkpoints
        db = self.sync_db
        if (
            checkpoints is not None
            and not self.closed
            and is_small(args, kwargs)
            and pool_has_room(db)
        ):
            try:
                done, result = attempt_inline(lambda: fn(db, *args, **kwargs), write=write)
            finally:
                # Inline calls one after another, returning or raising, must not keep the
                # event loop to themselves.
                if should_yield():
                    await asyncio.sleep(0)
            if done:
                checkpoints.after_call()
                return result  # type: ignore[return-value]  # R when done
        return await self.run_sync(fn, *args, **kwargs)

    async def close(self) -> None:
        """Close every pooled connection (and remove a ``:memory:`` database); idempotent.

        Later calls through this database raise ``RuntimeError("Connection is closed")``. Calls
        made while one is running wait for that one (``gather(adb.close(), adb.close())``).
        """
        closing = self._closing
        if closing is None or (closing.done() and (closing.cancelled() or closing.exception())):
            # None yet, or one cut short (cancelled at the loop's teardown, or failed): again.
            closing = self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(closing)

    async def _close(self) -> None:
        if self._async_view is not None:
            await greenlet_spawn(self._async_view.close)
        if self._threads is not None and not self.closed:
            checkpoints = self._checkpoints
            if checkpoints is not None:
                await self._threads.run(checkpoints.join)
            await self.run_sync(DatabaseConnection.close)
            self._threads.shutdown()

    async def __aenter__(self) -> "AsyncDatabase":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"AsyncDatabase({redact_url(self.url)!r}, {state})"

    __str__ = __repr__


def _backend(location: "str | PathLike[str] | URL | None") -> str:
    """The backend of ``location`` (``sqlite`` when so broken that the connection will say so)."""
    try:
        return parse_location(
            get_database_url() if location is None else location
        ).get_backend_name()
    except ValueError:
        return "sqlite"


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
