"""Lean reads: a SELECT compiled once per dialect, run on the driver's cursor, rows typed once.

For a read returning many rows, SQLAlchemy's per-call work (cache key, execution context, result
object, a processor call per value) costs more than the query. ``LeanSelect`` does that work once
per dialect: the SQL text, the order of its parameters with their bind processors, and each
column's result processor (the same ones Core would apply: aware UTC datetimes, JSON documents as
dicts, enums as members). A call then checks a connection out of the pool, executes, converts.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Dialect, Select, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor

if TYPE_CHECKING:  # connection.py imports utc_sessions from here
    from cosmos_models.db.connection import DatabaseConnection

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # None: the driver takes named parameters
    binds: dict[str, Processor | None]
    defaults: dict[str, Any]  # values the statement holds itself (SQLite's OFFSET -1 …)
    # Each column's result processor; some depend on the driver's type code, known once the
    # first cursor has a description (what Core caches the same way).
    results: list[tuple[Processor | None, ...]]


class LeanSelect:
    """A SELECT whose SQL and conversions are prepared once per dialect (see the module).

    Its parameters are ``bindparam``s with names (and types where the column does not give
    one); ``rows`` takes their values by name.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self.columns: tuple[str, ...] = tuple(str(c.key) for c in statement.selected_columns)
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect_key(dialect))
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            positions = compiled.positiontup
            binds: dict[str, Processor | None] = {
                name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in compiled.params
            }
            found = _Compiled(
                sql=compiled.string,
                positions=None if positions is None else tuple(positions),
                binds=binds,
                defaults={
                    name: _processed(binds[name], value)
                    for name, value in compiled.params.items()
                    if value is not None
                },
                results=[],
            )
            self._compiled[dialect_key(dialect)] = found
        return found

    def rows(self, db: "DatabaseConnection", values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with ``values`` (by bind name); return the rows typed as Core would.

        Raises ``RuntimeError`` once ``db`` is closed, ``DatabaseError`` for driver errors.
        """
        compiled = self._for(db.engine.dialect)
        with driver_cursor(db) as cursor:
            cursor.execute(compiled.sql, _parameters(compiled, values))
            found = cursor.fetchall()
            if not compiled.results:
                compiled.results.append(self._processors(db.engine.dialect, cursor.description))
        return typed(found, compiled.results[0])

    def rows_on(self, connection: Connection, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """``rows`` on a checked-out ``connection``, in its transaction (or autocommit).

        Runs on the driver's cursor like ``rows``; a driver error goes through Core's own
        handling, as ``connection.execute`` would: a ``sqlalchemy.exc.DBAPIError``, and for a
        dead connection ``connection_invalidated`` set and the pool invalidated (what
        ``run_unit`` decides on).
        """
        compiled = self._for(connection.dialect)
        parameters = _parameters(compiled, values)
        if not connection.in_transaction():
            # What Core's execute does first: the begin (and later commit) events fire, which
            # SQLite's BEGIN IMMEDIATE and the replicas' read-your-writes mark rely on.
            connection.begin()
        cursor = connection.connection.cursor()
        try:
            cursor.execute(compiled.sql, parameters)
            found = cursor.fetchall()
            if not compiled.results:
                compiled.results.append(self._processors(connection.dialect, cursor.description))
        except Exception as exc:
            connection._handle_dbapi_exception(exc, compiled.sql, parameters, cursor, None)
        finally:
            cursor.close()
        return typed(found, compiled.results[0])

    def _processors(self, dialect: Dialect, description: Any) -> tuple[Processor | None, ...]:
        return tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, described[1])
            for column, described in zip(self.statement.selected_columns, description, strict=True)
        )


def dialect_key(dialect: Dialect) -> tuple[Any, ...]:
    """What the SQL and the conversions depend on: backend, driver, its paramstyle, the server."""
    return (dialect.name, dialect.driver, dialect.paramstyle, dialect.server_version_info)


def _parameters(compiled: _Compiled, values: dict[str, Any]) -> Any:
    """The driver's parameters: ``values`` (by bind name) and the statement's own, processed."""
    processed = dict(compiled.defaults)
    for name, value in values.items():
        processed[name] = _processed(compiled.binds[name], value)
    if compiled.positions is None:
        return processed
    return tuple(processed[name] for name in compiled.positions)


def _processed(bind: Processor | None, value: Any) -> Any:
    return value if bind is None or value is None else bind(value)


def typed(rows: Sequence[Sequence[Any]], processors: Sequence[Processor | None]) -> list[Any]:
    """``rows`` with each column's processor applied (columns without one are left as they are)."""
    active = [(index, p) for index, p in enumerate(processors) if p is not None]
    if not active:
        return [tuple(row) for row in rows]
    converted = []
    for row in rows:
        values = list(row)
        for index, process in active:
            values[index] = process(values[index])
        converted.append(tuple(values))
    return converted


@contextmanager
def driver_cursor(db: "DatabaseConnection") -> Iterator[DBAPICursor]:
    """Yield a driver cursor on a pooled connection; end its transaction and give it back.

    One statement needs no transaction of its own: SQLite runs it in autocommit mode (a
    consistent snapshot), servers in the driver's implicit transaction, which the pool rolls
    back when the connection returns to it (so the next read sees a fresh snapshot).
    Raises ``RuntimeError`` once ``db`` is closed, ``DatabaseError`` for driver errors
    (the server down included).
    """
    db._check_open()
    driver_error = db.engine.dialect.loaded_dbapi.Error
    if db.routes_reads:
        # With replicas, the router picks the server (read-your-writes included); the read
        # still runs on that connection's driver cursor.
        with db.connect(read_only=True) as routed:
            cursor = routed.connection.cursor()
            try:
                yield cursor
            except driver_error as exc:
                wrapped = sa_exc.DBAPIError.instance("", None, exc, driver_error)
                raise db.translate_error(wrapped) from None
            finally:
                cursor.close()
        return
    try:
        connection = db.engine.raw_connection()  # the pool's errors are the driver's own
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        finally:
            # Back to the pool, whose reset on return rolls the transaction back (once: PyMySQL
            # sends every ROLLBACK to the server) and which drops a broken connection.
            connection.close()
    except driver_error as exc:
        wrapped = sa_exc.DBAPIError.instance("", None, exc, driver_error)
        raise db.translate_error(wrapped) from None


def utc_sessions(engine: Engine) -> None:
    """Make every new PostgreSQL session use UTC, so that psycopg returns ``timezone.utc``.

    Values are the same instants either way; a session in UTC lets readers keep psycopg's
    datetimes as they come instead of converting each from the server's named zone.
    """
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "connect")
    def _set_utc(dbapi_connection: DBAPIConnection, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        dbapi_connection.commit()
