"""Driver and SQLite errors as one-line `DatabaseError`s with a hint of what to do."""

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from sqlalchemy import exc as sa_exc

from cosmos_models.errors import CommitUnknownError, DatabaseError

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
