"""Dead server connections, recovered from without a round trip per call.

Two parts replace the pool's pre-ping (a ``SELECT 1`` before every checkout, one round trip each):

* ``discard_closed_on_checkout``: a pooled connection the server has closed (restart,
  ``pg_terminate_backend``, ``KILL``, an idle timeout) has something to read while it sits idle
  in the pool: the server's farewell message or end-of-file. A zero-timeout ``poll`` of its socket
  (a system call, no network traffic) finds it, and the pool opens a fresh connection instead.
* ``run_unit``: runs a unit of work and retries it **once** when the connection turns out to be
  dead (SQLAlchemy's ``is_disconnect``, which also invalidates the pool's other connections),
  but only when nothing can have been committed. In a transaction that means the error was raised
  before COMMIT was sent: the server rolls back a transaction whose connection dies before it
  commits, so running the work again cannot do it twice. In autocommit (PostgreSQL, where one
  statement is its own transaction and one round trip) a write is committed by the server as it
  runs, so once a write was sent a lost reply leaves its outcome unknown: that error is raised,
  never retried (a claim retried then could take a second batch while the first stays held by a
  worker that never saw it). Both cases where the outcome is unknown (a connection lost during
  COMMIT, or after an autocommitted write was sent) raise ``CommitUnknownError``.
"""

import select
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable, Result, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from cosmos_models.db.lean import LeanSelect
from cosmos_models.db.translate import commit_or_unknown
from cosmos_models.errors import CommitUnknownError, DatabaseError

T = TypeVar("T")
_POLL_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _socket_fd(dbapi_connection: Any) -> int | None:
    """The socket of a psycopg (``fileno()``) or PyMySQL (``_sock``) connection, if any."""
    fileno = getattr(dbapi_connection, "fileno", None)
    if callable(fileno):
        return int(fileno())
    sock = getattr(dbapi_connection, "_sock", None)
    return None if sock is None else int(sock.fileno())


def closed_by_server(dbapi_connection: Any) -> bool:
    """True if an idle connection's socket has data or end-of-file waiting (the server left).

    A healthy idle connection has nothing to read: every reply was read with its request.
    """
    try:
        fd = _socket_fd(dbapi_connection)
    except Exception:  # a driver that already knows it is closed refuses fileno()
        return True
    if fd is None or fd < 0:
        return fd is not None
    poller = select.poll()
    poller.register(fd, _POLL_READABLE)
    return bool(poller.poll(0))


def discard_closed_on_checkout(engine: Engine) -> None:
    """Make ``engine``'s pool replace, at checkout, connections the server has closed."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(
        dbapi_connection: Any, _: ConnectionPoolEntry, __: PoolProxiedConnection
    ) -> None:
        if closed_by_server(dbapi_connection):
            # The pool invalidates this connection and checks out a fresh one.
            raise sa_exc.DisconnectionError("the server closed this pooled connection")


class Unit:
    """The connection a unit of work runs on; it records whether a write was sent."""

    def __init__(self, connection: Connection, *, autocommit: bool) -> None:
        self.connection = connection
        self.autocommit = autocommit
        self.sent_write = False

    def read(self, statement: Executable, parameters: dict[str, Any]) -> Result[Any]:
        """Execute a statement that changes nothing."""
        return self.connection.execute(statement, parameters)

    def write(self, statement: Executable, parameters: dict[str, Any]) -> Result[Any]:
        """Execute a statement that may change rows (committed at once in autocommit)."""
        self.sent_write = True
        return self.connection.execute(statement, parameters)

    def write_lean(self, statement: LeanSelect, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        """``write`` for a ``LeanSelect`` (its data-modifying CTEs): its rows, typed."""
        self.sent_write = True
        return statement.rows_on(self.connection, values)


def unit_engine(engine: Engine) -> tuple[Engine, bool]:
    """The variant of ``engine`` units run on (sharing its pool), and whether it autocommits."""
    if engine.dialect.name == "postgresql":
        # One statement, one round trip: psycopg would otherwise send BEGIN and COMMIT as
        # round trips of their own. Units issue at most one write, their last statement.
        return engine.execution_options(isolation_level="AUTOCOMMIT"), True
    # SQLite: a transaction that takes the write lock at BEGIN (see connection.py).
    return engine.execution_options(cosmos_writer=True), False


def run_unit(
    engine: tuple[Engine, bool],
    work: Callable[[Unit], T],
    translate: Callable[[BaseException], DatabaseError],
    *,
    read_committed: bool = False,
) -> T:
    """Run ``work`` on ``engine`` (from ``unit_engine``), committed when it returns; retried once.

    See the module's docstring for when a retry is safe. ``read_committed`` runs a MariaDB/MySQL
    transaction at READ COMMITTED (PostgreSQL's default already). Raises ``CommitUnknownError``
    when the outcome is unknown, else the ``sqlalchemy.exc.DBAPIError`` of a failure (the caller
    translates it).
    """
    units, autocommit = engine
    for attempt in (1, 2):
        committing = False
        unit: Unit | None = None
        try:
            with units.connect() as connection:
                unit = Unit(connection, autocommit=autocommit)
                if read_committed and units.dialect.name in ("mysql", "mariadb"):
                    # For the next transaction only: no reset needed when the connection returns.
                    connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                result = work(unit)
                committing = True
                commit_or_unknown(connection, translate)
                return result
        except sa_exc.DBAPIError as exc:
            wrote = autocommit and unit is not None and unit.sent_write
            nothing_committed = not committing and not wrote
            if attempt == 1 and exc.connection_invalidated and nothing_committed:
                continue
            if wrote and exc.connection_invalidated:
                raise CommitUnknownError(
                    "the connection was lost after a write was sent: it may or may not have been "
                    f"applied; check before retrying ({translate(exc)})"
                ) from None
            raise
    raise AssertionError("unreachable")  # pragma: no cover
