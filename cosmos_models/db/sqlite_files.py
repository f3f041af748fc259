"""SQLite files: the pragmas every connection gets, opened read-only without leaving files behind,
and the engine URI of a path."""

import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry


def on_read_only_file_system(path: Path) -> bool:
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
    if on_read_only_file_system(path):
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


def sqlite_engine_url(path: Path, options: Mapping[str, Any], *, read_only: bool) -> URL:
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


def read_only_engine(path: Path) -> Engine:
    """An engine whose connections are ``open_sqlite_read_only(path)``: for checks before opening
    a file for real (nothing is created, nothing is written, no file is left behind)."""
    return create_engine("sqlite://", creator=lambda: open_sqlite_read_only(path))


def configure_sqlite_engine(
    engine: Engine, *, busy_timeout_ms: int, read_only: bool, wal: bool, synchronous: str
) -> None:
    """Set up every connection of ``engine``: foreign keys on, the busy timeout, ``query_only``
    when read-only, WAL with ``synchronous``; and ``BEGIN IMMEDIATE`` for transactions of
    connections marked ``cosmos_writer`` (a deferred transaction that reads and then writes
    cannot wait for the lock: SQLite fails it at once with "database is locked")."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        if wal:
            use_wal(cursor, busy_timeout_ms)
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writer = connection.get_execution_options().get("cosmos_writer", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def use_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Put the database of ``cursor`` in WAL mode, waiting up to ``busy_timeout_ms`` for a lock.

    A file is WAL once switched (the mode persists), so the switch is made only when needed.
    Leaving rollback-journal mode needs the file to itself, and SQLite does not call its busy
    handler for it: a connection opened while another holds the write lock (the first one
    opened on a freshly migrated file, for instance) would fail at once with "database is
    locked". So the switch is retried, with a growing pause, until the busy timeout is spent;
    then that error is raised.
    """
    cursor.execute("PRAGMA journal_mode")  # DB-API only: the aiosqlite adapter's too
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if "locked" not in str(exc) or left <= 0:
                raise
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
