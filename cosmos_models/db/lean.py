"""Lean reads: a SELECT compiled once per dialect, run on the driver's cursor, rows typed once.

For a read returning many rows, SQLAlchemy's per-call work (cache key, execution context, result
object, a processor call per value) costs more than the query. ``LeanSelect`` does that work once
per dialect: the SQL text, the order of its parameters with their bind processors, and each
column's result processor (the same ones Core would apply: aware UTC datetimes, JSON documents as
dicts, enums as members; their faster equivalents, ``lean_result_processor``). A call then runs
on one of the database's reader connections (``readers.py``) and converts, building read models
in one pass where asked (``models``).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection, Dialect, Select, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection

from cosmos_models.models.readmodels import typed_reader
from cosmos_models.models.types import lean_result_processor

if TYPE_CHECKING:  # connection.py imports utc_sessions from here
    from cosmos_models.db.connection import DatabaseConnection

Processor = Callable[[Any], Any]
ReadT = TypeVar("ReadT", bound=BaseModel)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # None: the driver takes named parameters
    binds: dict[str, Processor | None]
    defaults: dict[str, Any]  # values the statement holds itself (SQLite's OFFSET -1 …)
    # Each column's result processor; some depend on the driver's type code, known once the
    # first cursor has a description (what Core caches the same way).
    results: list[tuple[Processor | None, ...]]
    builders: dict[type[Any], Callable[[Sequence[Any]], Any]]  # read models, built once each


class LeanSelect:
    """A SELECT whose SQL and conversions are prepared once per dialect (see the module).

    Its parameters are ``bindparam``s with names (and types where the column does not give
    one); ``rows`` takes their values by name.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self.columns: tuple[str, ...] = tuple(str(c.key) for c in statement.selected_columns)
        self._compiled: dict[tuple[Any, ...], _Compiled] = {}
        self._last: tuple[Dialect | None, Any] = (None, None)

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
                builders={},
            )
            self._compiled[dialect_key(dialect)] = found
        self._last = (dialect, found)
        return found

    def rows(self, db: "DatabaseConnection", values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with ``values`` (by bind name); return the rows typed as Core would.

        Raises ``RuntimeError`` once ``db`` is closed, ``DatabaseError`` for driver errors.
        """
        compiled, found = self._execute(db, values)
        return typed(found, compiled.results[0])

    def models(
        self,
        db: "DatabaseConnection",
        values: dict[str, Any],
        model: type[ReadT],
        column_of: Mapping[str, str] | None = None,
    ) -> list[ReadT]:
        """Execute like ``rows``; return each row as ``model`` (see ``typed_reader``), built
        from the driver's values in one pass. Raises like ``rows``."""
        compiled, found = self._execute(db, values)
        build = compiled.builders.get(model)
        if build is None:
            build = typed_reader(model, self.columns, compiled.results[0], column_of)
            compiled.builders[model] = build
        return list(map(build, found))

    def _execute(
        self, db: "DatabaseConnection", values: dict[str, Any]
    ) -> tuple[_Compiled, list[Any]]:
        dialect = db.engine.dialect
        # The last dialect asked: one identity test instead of building the key on every call.
        compiled = self._last[1] if self._last[0] is dialect else self._for(dialect)
        parameters = _parameters(compiled, values)
        described = not compiled.results  # psycopg builds a description on each request
        found, description = fetch(db, compiled.sql, parameters, describe=described)
        if described:
            compiled.results.append(self._processors(dialect, description))
        return compiled, found

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
            lean_result_processor(column.type, dialect, described[1])
            for column, described in zip(self.statement.selected_columns, description, strict=True)
        )


def dialect_key(dialect: Dialect) -> tuple[Any, ...]:
    """What the SQL and the conversions depend on: backend, driver, its paramstyle, the server."""
    return (dialect.name, dialect.driver, dialect.paramstyle, dialect.server_version_info)


def _parameters(compiled: _Compiled, values: dict[str, Any]) -> Any:
    """The driver's parameters: ``values`` (by bind name) and the statement's own, processed."""
    binds = compiled.binds
    processed = dict(compiled.defaults)
    for name, value in values.items():
        bind = binds[name]
        processed[name] = value if bind is None or value is None else bind(value)
    if compiled.positions is None:
        return processed
    return tuple([processed[name] for name in compiled.positions])


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
            value = values[index]
            if value is not None:  # NULL is None whatever the column's type
                values[index] = process(value)
        converted.append(tuple(values))
    return converted


def fetch(
    db: "DatabaseConnection",
    sql: str,
    parameters: Any,
    *,
    describe: bool = False,
    options: dict[str, Any] | None = None,
) -> tuple[list[Any], Any]:
    """Run one SELECT on a driver cursor; return its rows (as the driver gives them) and, if
    ``describe``, the cursor's description (else None). ``options`` go to the cursor's
    ``execute`` as keywords (psycopg's ``binary=True``).

    It runs in autocommit on one of ``db``'s reader connections (``readers.py``): one statement
    needs no transaction of its own and sees what was committed when it ran. With all readers
    busy it runs on a pooled connection, whose reset on return ends the driver's transaction;
    with replicas, on the connection the router picks (read-your-writes included).
    Raises ``RuntimeError`` once ``db`` is closed, ``DatabaseError`` for driver errors
    (the server down included).
    """
    db._check_open()
    driver_error = db.engine.dialect.loaded_dbapi.Error
    if db.routes_reads:
        with db.connect(read_only=True) as routed:
            return _run(
                routed.connection,
                sql,
                parameters,
                db,
                driver_error,
                describe=describe,
                options=options,
            )
    readers = db.readers
    try:
        loan = readers.acquire()
    except driver_error as exc:
        raise _translated(db, exc, driver_error) from None
    except sa_exc.TimeoutError as exc:  # the pool had no connection to open a reader with
        raise db.translate_error(exc) from None
    if loan is None:  # every reader is busy: a pooled connection
        try:
            pooled = db.engine.raw_connection()  # the pool's errors are the driver's own
        except driver_error as exc:
            raise _translated(db, exc, driver_error) from None
        except sa_exc.TimeoutError as exc:  # … but waiting for a free connection
            raise db.translate_error(exc) from None
        try:
            return _run(
                pooled, sql, parameters, db, driver_error, describe=describe, options=options
            )
        finally:
            # Back to the pool, whose reset on return rolls the transaction back (once: PyMySQL
            # sends every ROLLBACK to the server) and which drops a broken connection.
            pooled.close()
    try:
        found = _run(loan[0], sql, parameters, db, driver_error, describe=describe, options=options)
    except BaseException:
        readers.discard(loan)  # its state is unknown: never lent again
        raise
    readers.release(loan)
    return found


def _run(
    connection: Any,
    sql: str,
    parameters: Any,
    db: "DatabaseConnection",
    driver_error: Any,
    *,
    describe: bool,
    options: dict[str, Any] | None,
) -> tuple[list[Any], Any]:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, parameters, **(options or {}))
        return cursor.fetchall(), cursor.description if describe else None
    except driver_error as exc:
        raise _translated(db, exc, driver_error) from None
    finally:
        cursor.close()


def _translated(db: "DatabaseConnection", exc: Exception, driver_error: Any) -> Exception:
    wrapped = sa_exc.DBAPIError.instance("", None, exc, driver_error)
    return db.translate_error(wrapped)


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
