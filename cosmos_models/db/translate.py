"""Driver and SQLite errors as one-line `DatabaseError`s with a hint of what to do."""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final, Protocol

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from cosmos_models.errors import CommitUnknownError, DatabaseError, ValueTooLargeError

_NOT_MIGRATED: Final = "not migrated: run cosmos-models db upgrade"


# Driver error codes: MySQL/MariaDB "no such table" / "unknown column", and its "read only".
_MYSQL_MISSING: Final = frozenset({1146, 1054})


_MYSQL_READ_ONLY: Final = frozenset({1290, 1792, 1836})


_MYSQL_CONNECT: Final = frozenset({1044, 1045, 1049, 2002, 2003, 2005, 2006, 2013})


def describe_error(error: BaseException, where: str) -> str:
    """One line naming a database problem, with what to do where that is known.

    ``where`` names the database (a path or a redacted URL). The caller redacts secrets.
    """
    if isinstance(error, sa_exc.TimeoutError):  # the pool's, waiting for a free connection
        return NO_FREE_CONNECTION
    return _describe_driver_error(error, where)


def _describe_driver_error(error: BaseException, where: str) -> str:
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


class _Committable(Protocol):
    def commit(self) -> None: ...


def commit_or_unknown(
    transaction: _Committable, translate: Callable[[BaseException], DatabaseError]
) -> None:
    """Commit ``transaction`` (a session or a Core transaction).

    Raises ``CommitUnknownError`` when the connection was lost during the commit: the server
    may have committed before it went away, so the caller must check, never retry blindly.
    Other driver errors propagate as they are.
    """
    try:
        transaction.commit()
    except sa_exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise CommitUnknownError(
            "the connection was lost during COMMIT: the transaction may or may not have been "
            f"applied; check before retrying ({translate(exc)})"
        ) from None


@contextmanager
def settled(
    session: Session, translate: Callable[[BaseException], DatabaseError]
) -> Iterator[None]:
    """Commit ``session`` when the block ends cleanly, else roll it back; errors translated.

    Pending ORM changes are flushed first: a failure there (a connection lost while sending)
    is before COMMIT, so nothing was written, unlike a failure of the COMMIT itself
    (``CommitUnknownError``, from ``commit_or_unknown``). Driver errors come out as
    ``translate`` makes them (an exhausted pool too), anything else as it is.
    """
    try:
        yield
        session.flush()
        commit_or_unknown(session, translate)
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        _roll_back(session)
        raise translate(exc) from None
    except BaseException:
        _roll_back(session)
        raise


def _roll_back(session: Session) -> None:
    """Roll ``session`` back after an error; the error being raised is the one to report.

    On a connection the failure broke, the ROLLBACK fails too (MySQL "server has gone away"):
    the server has discarded the transaction with the connection, which SQLAlchemy has marked
    invalid, so that second error says nothing new.
    """
    with suppress(sa_exc.DBAPIError):
        session.rollback()


# What the MySQL drivers send escaped, as two bytes: a value of backslashes or quotes doubles.
_ESCAPED: Final = ("\\", "'", '"', "\x00", "\n", "\r", "\x1a")

NO_FREE_CONNECTION: Final = (
    "no free connection: every connection of the pool (pool_size + max_overflow) stayed in use "
    "for pool_timeout seconds"
)


def values_size(parameters: object, *, bound: bool = False) -> int:
    """The bytes of text and binary values in a statement's parameters (a mapping, a sequence of
    them, or of tuples) as the MySQL drivers send them: UTF-8, each escaped character twice.

    ``bound``: a quick upper bound instead, without encoding or counting (4 bytes a character,
    2 a byte: an escaped character is one ASCII byte, a wider one is never escaped).
    """
    stack = [parameters]
    size = 0
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if bound:
                size += 4 * len(value)
            else:
                size += len(value.encode("utf-8", "surrogatepass"))
                size += sum(value.count(char) for char in _ESCAPED)
        elif isinstance(value, bytes | bytearray):
            escaped = 0 if bound else sum(value.count(char.encode()) for char in _ESCAPED)
            size += (2 * len(value)) if bound else len(value) + escaped
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return size


def refuse_oversized_values(engine: Engine) -> None:
    """Make ``engine`` (MariaDB/MySQL) refuse, before sending it, a statement whose values are
    larger than the server's ``max_allowed_packet`` (read on the first connection).

    The server would drop the connection in the middle of such a packet: the sync driver then
    raises "server has gone away" at the statement, the async one at the COMMIT after it, which
    reads as an unreachable server or an unknown commit, and retrying cannot help. Raises
    ``ValueTooLargeError`` instead, nothing sent. With ``executemany`` each row is one packet at
    most (the driver splits the batch), so each row is measured.
    """
    limit: list[int] = []

    @event.listens_for(engine, "connect")
    def _read_limit(dbapi_connection: Any, _record: Any) -> None:
        if not limit:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT @@max_allowed_packet")
                limit.append(int(cursor.fetchone()[0]))
            finally:
                cursor.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _check(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if not limit:
            return
        if values_size(parameters, bound=True) + len(statement) <= limit[0]:
            return  # the usual case: far from the limit, told by one cheap pass
        rows = parameters if many else [parameters]
        size = max((values_size(row) for row in rows), default=0) + len(statement)
        if size > limit[0]:
            raise ValueTooLargeError(_too_large(size, limit[0]))


def _too_large(size: int, allowed: int) -> str:
    return (
        f"value too large: the statement and its values are {size:,} bytes, more than the "
        f"server takes in one packet (max_allowed_packet: {allowed:,} bytes); nothing was written"
    )
