"""What keeps a migration safe: one migrator at a time, SQLite backups, foreign keys checked.

A PostgreSQL advisory lock, a MariaDB named lock, and on SQLite an ``flock`` on the file; before a
SQLite file changes it is copied with the online backup API; on SQLite, foreign keys are off
while tables are rebuilt and ``PRAGMA foreign_key_check`` must come back empty before commit.
"""

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from cosmos_models.db.revisions import VERSION_TABLE, DatabaseState
from cosmos_models.db.sqlite_files import open_sqlite_read_only
from cosmos_models.db.translate import sqlite_error
from cosmos_models.errors import MigrationError

if TYPE_CHECKING:
    from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.models.types import backend_family, utcnow

# An arbitrary constant: the key of PostgreSQL's advisory lock and MariaDB's named lock.
_LOCK_KEY = 7_316_952_804_113


_MYSQL_LOCK_NAME = "cosmos_models_migrate"


_MYSQL_LOCK_TIMEOUT_S = 600


def sqlite_file_of(db: "DatabaseConnection") -> Path | None:
    # Every SQLite file location (plain path, sqlite: URL, file: URI) was resolved to a checked
    # absolute path by parse_location, so each is locked and backed up alike.
    return db.path


@contextmanager
def file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the database file (it does not change the file)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def server_lock(connection: Connection) -> None:
    """Take the migration lock of a server backend for the current transaction/connection."""
    name = backend_family(connection.dialect)
    if name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif name == "mysql":
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": _MYSQL_LOCK_NAME, "timeout": _MYSQL_LOCK_TIMEOUT_S},
        ).scalar()
        if got != 1:
            raise MigrationError("another migration holds the lock; try again when it finishes")


def server_unlock(connection: Connection) -> None:
    if backend_family(connection.dialect) == "mysql":
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})


@contextmanager
def sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    # PRAGMA foreign_keys is a no-op inside a transaction: it must run before BEGIN.
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise MigrationError(
            f"the migration would leave {len(broken)} rows whose parent is missing "
            f"(tables: {', '.join(tables)}); nothing was changed"
        )


def read_sqlite_state(path: Path) -> DatabaseState | None:
    """Read a SQLite file's revision and tables without changing a byte of it."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    connection = open_sqlite_read_only(path.resolve())
    try:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        revision = None
        if VERSION_TABLE in tables:
            row = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
            revision = row[0] if row else None
        return DatabaseState(revision=revision, tables=tables - {VERSION_TABLE})
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    finally:
        connection.close()


def backup_sqlite(path: Path, label: str) -> Path:
    """Copy a SQLite file with the online backup API to ``<name>.backup-<label>-<time>.db``."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.stem}.backup-{label}-{stamp}{path.suffix or '.db'}")
    return copy_sqlite(path, target)


def copy_sqlite(path: Path, target: Path) -> Path:
    """A consistent copy of a SQLite file, even while others write to it (online backup API).

    Raises ``FileExistsError`` rather than overwrite ``target``.
    """
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = open_sqlite_read_only(path.resolve())
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)  # a half-written copy is worse than none
        raise sqlite_error(exc, path) from None
    finally:
        source.close()
    return target
