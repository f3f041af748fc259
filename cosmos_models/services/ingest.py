"""Inserting validated, numbered progress rows at the driver's speed, in the caller's transaction.

The rows come from ``record_progress_batch``: checked by pydantic, numbered and counted in their
runs' summaries already. What is left is storage: SQLAlchemy's per-row parameter processing
cost as much as the driver's own insert, so the rows are turned into storage-form tuples here
(timestamps converted by the column type's own rule, in one pass) and handed to the
driver in one ``executemany`` on the SQLAlchemy connection. On PostgreSQL, large batches go
through ``COPY … FROM STDIN`` instead, on the same connection and transaction: all or nothing
still, and ``id`` keeps coming from the column's sequence (COPY leaves out the column, so the
server fills it as for an INSERT).
"""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Dialect
from sqlalchemy import exc as sa_exc
from sqlalchemy.util.concurrency import await_, in_greenlet

from cosmos_models.db.tables import PROGRESS
from cosmos_models.models.types import utc_storage

# The columns a writer supplies, in the order of the tuples handed to the driver.
COLUMNS: Final = ("run_id", "seq", "stage", "percentage", "message", "timestamp")

COPY_THRESHOLD: Final = 100
"""Batches of at least this many rows go through COPY on PostgreSQL. ``bench_progress.py
--threshold-scan``: COPY costs 2-3x the INSERT for 1-10 rows, breaks even near 50 and is 1.4x
faster at 100, 1.7x at 2,000."""

_SQL_CACHE: dict[tuple[str, str], str] = {}


def _statement(dialect: Dialect, kind: str) -> str:
    """The INSERT (``kind="insert"``) or COPY text for ``dialect``, built once."""
    key = (dialect.name, kind)
    if key not in _SQL_CACHE:
        quote = dialect.identifier_preparer.quote
        table = quote(PROGRESS.name)
        names = ", ".join(quote(name) for name in COLUMNS)
        if kind == "copy":
            _SQL_CACHE[key] = f"COPY {table} ({names}) FROM STDIN"
        else:
            marker = "?" if dialect.paramstyle == "qmark" else "%s"
            markers = ", ".join([marker] * len(COLUMNS))
            _SQL_CACHE[key] = f"INSERT INTO {table} ({names}) VALUES ({markers})"
    return _SQL_CACHE[key]


def storage_tuples(
    rows: Sequence[dict[str, Any]], convert: Callable[[list[datetime]], list[Any]]
) -> list[tuple[Any, ...]]:
    """The rows as tuples in ``COLUMNS`` order, timestamps in storage form (``convert``).

    A batch stamped by one clock reading (events given without a time) has one timestamp:
    it is converted once.
    """
    stamps = [row["timestamp"] for row in rows]
    first = stamps[0]
    if stamps[-1] is first and stamps.count(first) == len(stamps):
        stored = convert([first]) * len(stamps)
    else:
        stored = convert(stamps)
    return [
        (row["run_id"], row["seq"], row["stage"], row["percentage"], row["message"], moment)
        for row, moment in zip(rows, stored, strict=True)
    ]


def insert_rows(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert validated, numbered ``rows`` (dicts with ``COLUMNS``) in the current transaction.

    Raises SQLAlchemy's ``DBAPIError`` subclasses for driver errors (as ``execute`` would), so
    ``DatabaseConnection`` translates them; the caller's transaction must then roll back.
    """
    if not rows:  # executemany of no rows would run the statement once, without values
        return
    dialect = connection.dialect
    tuples = storage_tuples(rows, utc_storage(dialect))
    if dialect.name == "postgresql" and len(tuples) >= COPY_THRESHOLD:
        _copy(connection, tuples)
    else:
        connection.exec_driver_sql(_statement(dialect, "insert"), tuples)


def _copy(connection: Connection, tuples: list[tuple[Any, ...]]) -> None:
    """``COPY`` the tuples in on the connection's psycopg connection (same transaction)."""
    statement = _statement(connection.dialect, "copy")
    dbapi_connection = connection.connection.driver_connection
    dbapi_error: type[Exception] = connection.dialect.loaded_dbapi.Error
    try:
        if in_greenlet():  # the async side (cosmos_models.aio): psycopg's AsyncConnection
            await_(_copy_async(dbapi_connection, statement, tuples))
        else:
            with dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
                write_row = copy.write_row
                for row in tuples:
                    write_row(row)
    except dbapi_error as error:
        # What Connection.execute does with a driver error: drop a dead connection from the
        # pool, and raise SQLAlchemy's wrapper so that one translation handles every path.
        disconnected = connection.dialect.is_disconnect(error, dbapi_connection, None)  # type: ignore[arg-type]
        if disconnected:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            statement,
            None,
            error,
            dbapi_error,
            connection_invalidated=disconnected,
            dialect=connection.dialect,
        ) from error


async def _copy_async(driver: Any, statement: str, tuples: list[tuple[Any, ...]]) -> None:
    """The same COPY on psycopg's ``AsyncConnection`` (awaited in SQLAlchemy's greenlet)."""
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in tuples:
            await copy.write_row(row)
