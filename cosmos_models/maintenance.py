"""Keeping the database healthy: statistics, pruning old runs into an archive, restoring them.

``prune`` deletes final runs older than a cutoff, with their progress, in batches. With an
archive, each batch's rows (the runs, their progress, and their prompt so a restore never
breaks a foreign key) are written and fsync'ed before the batch is deleted in one transaction,
so a crash at any point loses nothing and a rerun continues where it stopped.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, select, text

from cosmos_models.archive import Archive, Record
from cosmos_models.connection import DatabaseConnection
from cosmos_models.run import RunStatus
from cosmos_models.tables import PROGRESS, PROMPTS, RUNS
from cosmos_models.types import UTCDateTime, backend_family, utcnow

TABLES: dict[str, Table] = {"prompts": PROMPTS, "runs": RUNS, "progress": PROGRESS}
FINAL_STATUSES = tuple(status for status in RunStatus if status.is_final)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` or ``"3600s"`` as a ``timedelta``.

    Raises ``ValueError`` for anything else.
    """
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"duration {value!r} is not a number followed by s, m, h, d or w (e.g. 30d)"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_statuses(values: Iterable[str]) -> tuple[RunStatus, ...]:
    """Final statuses named by value. Raises ``ValueError`` for unknown or non-final ones."""
    statuses = []
    for value in values:
        try:
            status = RunStatus(value.strip())
        except ValueError:
            allowed = ", ".join(s.value for s in FINAL_STATUSES)
            raise ValueError(f"status {value!r} is not one of {allowed}") from None
        if not status.is_final:
            raise ValueError(f"status {value!r} is not final: only final runs can be pruned")
        statuses.append(status)
    return tuple(statuses)


# -- statistics -----------------------------------------------------------------------------


@dataclass
class DatabaseStats:
    """Row counts, runs per status, size on disk and the time span of the data."""

    rows: dict[str, int]
    runs_by_status: dict[str, int]
    size_bytes: int | None
    oldest: dict[str, datetime | None]
    newest: dict[str, datetime | None]


def _size_bytes(conn: DatabaseConnection, connection: Connection) -> int | None:
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
    if conn.is_memory:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        size = connection.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int(pages) * int(size)
    path = Path(conn.url.database or "")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def database_stats(conn: DatabaseConnection) -> DatabaseStats:
    """Gather ``DatabaseStats`` in one read-only transaction.

    Raises ``DatabaseError`` (one line, with a hint such as "not migrated") like every reader.
    """
    with conn.connect(read_only=True) as connection:
        rows = {
            name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in TABLES.items()
        }
        by_status = {
            str(RunStatus(status).value): int(count)
            for status, count in connection.execute(
                select(RUNS.c.status, func.count()).group_by(RUNS.c.status)
            )
        }
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
        size = _size_bytes(conn, connection)
    return DatabaseStats(rows, by_status, size, oldest, newest)


def _as_utc(value: datetime | str | None) -> datetime | None:
    """``MIN``/``MAX`` lose the column type on SQLite (text comes back): parse it."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- prune and restore ----------------------------------------------------------------------


@dataclass
class PruneResult:
    """What ``prune`` deleted (or, in a dry run, would delete)."""

    runs: int = 0
    progress: int = 0
    archived: int = 0
    batches: int = 0
    dry_run: bool = False
    archive_path: Path | None = None
    run_ids: list[str] = field(default_factory=list)


def _to_json(table: Table, row: Any) -> dict[str, Any]:
    values = {}
    for column in table.columns:
        value = row._mapping[column]
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        values[column.name] = value.value if isinstance(value, RunStatus) else value
    return values


def _from_json(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    row = dict(values)
    for column in table.columns:
        # Every timestamp column is a UTCDateTime; the archive holds them as ISO-8601 text.
        if isinstance(column.type, UTCDateTime) and isinstance(row.get(column.name), str):
            row[column.name] = datetime.fromisoformat(row[column.name])
    return row


def _candidates(
    conn: DatabaseConnection, statuses: Sequence[RunStatus], cutoff: datetime, limit: int
) -> list[str]:
    finished = func.coalesce(RUNS.c.completed_at, RUNS.c.created_at)
    query = (
        select(RUNS.c.id)
        .where(RUNS.c.status.in_(statuses), finished < cutoff)
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(limit)
    )
    with conn.engine.connect() as connection:
        return list(connection.execute(query).scalars())


def prune(
    conn: DatabaseConnection,
    *,
    older_than: timedelta,
    statuses: Sequence[RunStatus] = FINAL_STATUSES,
    archive_path: Path | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    now: datetime | None = None,
) -> PruneResult:
    """Delete final runs finished more than ``older_than`` ago, with their progress.

    Raises ``ValueError`` for a non-final status or a non-positive batch size.
    """
    statuses = parse_statuses(
        status.value if isinstance(status, RunStatus) else status for status in statuses
    )
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    cutoff = (now or utcnow()) - older_than
    result = PruneResult(dry_run=dry_run, archive_path=archive_path)
    if dry_run:
        finished = func.coalesce(RUNS.c.completed_at, RUNS.c.created_at)
        chosen = select(RUNS.c.id).where(RUNS.c.status.in_(statuses), finished < cutoff)
        with conn.engine.connect() as connection:
            result.runs = int(
                connection.execute(select(func.count()).select_from(chosen.subquery())).scalar_one()
            )
            result.progress = int(
                connection.execute(
                    select(func.count()).select_from(PROGRESS).where(PROGRESS.c.run_id.in_(chosen))
                ).scalar_one()
            )
        return result
    archive = Archive(archive_path) if archive_path is not None else None
    while True:
        run_ids = _candidates(conn, statuses, cutoff, batch_size)
        if not run_ids:
            return result
        with conn.get_session() as session:
            connection = session.connection()
            runs = connection.execute(select(RUNS).where(RUNS.c.id.in_(run_ids))).all()
            progress = connection.execute(
                select(PROGRESS).where(PROGRESS.c.run_id.in_(run_ids))
            ).all()
            if archive is not None:
                prompt_ids = {row.prompt_id for row in runs}
                prompts = connection.execute(
                    select(PROMPTS).where(PROMPTS.c.id.in_(prompt_ids))
                ).all()
                records: list[Record] = [
                    {"table": name, "row": _to_json(TABLES[name], row)}
                    for name, rows in (("prompts", prompts), ("runs", runs), ("progress", progress))
                    for row in rows
                ]
                # Durable before the delete below can commit: a crash in between leaves the
                # rows in both places, never in neither.
                result.archived += archive.append(records)
            deleted_progress = connection.execute(
                PROGRESS.delete().where(PROGRESS.c.run_id.in_(run_ids))
            )
            deleted_runs = connection.execute(RUNS.delete().where(RUNS.c.id.in_(run_ids)))
            result.progress += deleted_progress.rowcount
            result.runs += deleted_runs.rowcount
            result.batches += 1
            result.run_ids.extend(run_ids)


@dataclass
class RestoreResult:
    """How many archived rows ``restore`` put back, and how many were already there."""

    restored: dict[str, int] = field(default_factory=dict)
    already_present: int = 0


def restore(
    conn: DatabaseConnection, archive_path: Path, *, batch_size: int = 1000
) -> RestoreResult:
    """Put archived rows back (prompts first, then runs, then progress); skips rows present.

    Raises ``FileNotFoundError`` if the archive does not exist.
    """
    if not archive_path.exists():
        raise FileNotFoundError(f"archive {archive_path} does not exist")
    by_table: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for record in Archive(archive_path).records():
        by_table[str(record["table"])].append(record["row"])
    result = RestoreResult(restored=dict.fromkeys(TABLES, 0))
    for name in ("prompts", "runs", "progress"):
        table = TABLES[name]
        rows = by_table[name]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            with conn.get_session() as session:
                connection = session.connection()
                ids = [row["id"] for row in chunk]
                present = set(
                    connection.execute(select(table.c.id).where(table.c.id.in_(ids))).scalars()
                )
                missing = [_from_json(table, row) for row in chunk if row["id"] not in present]
                result.already_present += len(chunk) - len(missing)
                if missing:
                    connection.execute(table.insert(), missing)
                result.restored[name] += len(missing)
    if conn.engine.dialect.name == "postgresql" and result.restored["progress"]:
        with conn.engine.begin() as connection:
            connection.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('progress', 'id'), MAX(id)) FROM progress"
                )
            )
    return result
