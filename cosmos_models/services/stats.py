"""Statistics of a database: rows per table, runs per status, size on disk, time span, activity."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, func, select, text

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, PROMPTS, RUNS, TABLES
from cosmos_models.models.status import RunStatus
from cosmos_models.models.types import backend_family
from cosmos_models.services.common import check_connection, resolve_now

ACTIVITY_WINDOW: Final = timedelta(minutes=1)
"""How far back ``activity_stats`` counts progress events."""


@dataclass
class DatabaseStats:
    """Row counts, runs per status, size on disk and the time span of the data."""

    rows: dict[str, int]
    runs_by_status: dict[str, int]
    size_bytes: int | None
    oldest: dict[str, datetime | None]
    newest: dict[str, datetime | None]


def _size_bytes(db: DatabaseConnection, connection: Connection) -> int | None:
    dialect = backend_family(connection.dialect)
    if dialect == "postgresql":
        return int(
            connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        )
    if dialect == "mysql":
        value = connection.execute(
            text(
                "SELECT COALESCE(SUM(data_length + index_length), 0) "
                "FROM information_schema.tables WHERE table_schema = DATABASE()"
            )
        ).scalar_one()
        return int(value)
    if db.is_memory:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        size = connection.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int(pages) * int(size)
    path = Path(db.url.database or "")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def database_stats(db: DatabaseConnection) -> DatabaseStats:
    """Gather ``DatabaseStats`` in one read-only transaction.

    Raises ``DatabaseError`` (one line, with a hint such as "not migrated") like every reader.
    """
    with db.connect(read_only=True) as connection:
        rows = {
            name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in TABLES.items()
        }
        by_status = _runs_by_status(connection)
        oldest: dict[str, datetime | None] = {}
        newest: dict[str, datetime | None] = {}
        for name, column in (
            ("prompts", PROMPTS.c.created_at),
            ("runs", RUNS.c.created_at),
            ("progress", PROGRESS.c.timestamp),
        ):
            low, high = connection.execute(select(func.min(column), func.max(column))).one()
            oldest[name] = _as_utc(low)
            newest[name] = _as_utc(high)
        size = _size_bytes(db, connection)
    return DatabaseStats(rows, by_status, size, oldest, newest)


def _as_utc(value: datetime | str | None) -> datetime | None:
    """``MIN``/``MAX`` lose the column type on SQLite (text comes back): parse it."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _runs_by_status(connection: Connection) -> dict[str, int]:
    """Runs per status value (statuses without runs absent); one GROUP BY on the status index."""
    return {
        str(RunStatus(status).value): int(count)
        for status, count in connection.execute(
            select(RUNS.c.status, func.count()).group_by(RUNS.c.status)
        )
    }


@dataclass
class ActivityStats:
    """What a dashboard's header shows: runs per status (every status, zeros included) and
    progress events per second over ``ACTIVITY_WINDOW`` up to ``at``."""

    runs_by_status: dict[str, int]
    events_last_minute: int
    events_per_second: float
    at: datetime


def activity_stats(db: DatabaseConnection, *, now: datetime | None = None) -> ActivityStats:
    """Count runs per status and the progress events stamped in the minute before ``now``.

    Events are counted by their own timestamp (``now`` included, a minute before excluded) on
    the timestamp index. Raises ``ValueError`` naming ``db`` or a naive ``now``,
    ``DatabaseError`` like every reader.
    """
    check_connection(db)
    at = resolve_now(now)
    with db.connect(read_only=True) as connection:
        by_status = _runs_by_status(connection)
        recent = connection.execute(
            select(func.count())
            .select_from(PROGRESS)
            .where(PROGRESS.c.timestamp > at - ACTIVITY_WINDOW, PROGRESS.c.timestamp <= at)
        ).scalar_one()
    counts = {status.value: by_status.get(status.value, 0) for status in RunStatus}
    seconds = ACTIVITY_WINDOW.total_seconds()
    return ActivityStats(counts, int(recent), round(int(recent) / seconds, 3), at)
