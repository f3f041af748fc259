"""What every service function shares: the argument checks that need a connection, and limits."""

from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.orm import Session

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.types import _to_utc, utcnow

MAX_PAGE: Final = 1000
"""The most rows one listing or progress page returns."""

# Writers notify it in their transaction (delivered at commit); followers listen (PostgreSQL).
NOTIFY_CHANNEL: Final = "cosmos_progress"


def check_connection(db: Any) -> None:
    """Raise ``ValueError`` naming ``db`` unless it is a ``DatabaseConnection``, and
    ``RuntimeError("Connection is closed")`` after its ``close()``: before anything else, so
    that a call with nothing to do (an empty batch) answers the same as any other."""
    if not isinstance(db, DatabaseConnection):
        raise InvalidArgumentError(f"db: must be a DatabaseConnection, got {type(db).__name__}")
    db._check_open()


def resolve_now(now: datetime | None, name: str = "now") -> datetime:
    """Return ``now`` as aware UTC, or the current time; ``ValueError`` naming ``name`` if naive."""
    if now is None:
        return utcnow()
    if not isinstance(now, datetime):
        raise InvalidArgumentError(f"{name}: must be a timezone-aware datetime, got {now!r}")
    try:
        return _to_utc(now)
    except ValueError as exc:
        raise InvalidArgumentError(f"{name}: {exc}") from None


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` naming ``limit`` unless it is an integer from 1 to ``MAX_PAGE``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit: must be an integer from 1 to {MAX_PAGE}, got {limit!r}")


def rowcount(session: Session, statement: Executable) -> int:
    """Execute an UPDATE or DELETE and return how many rows it matched."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount
