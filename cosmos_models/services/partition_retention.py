"""Event retention by whole partitions: old partitions of progress dropped, archived first.

On PostgreSQL with a partitioned progress table (migration 0006), a partition whose whole range
lies before the retention cutoff is dropped in one statement instead of deleted row by row; the
row-by-row path (``maintenance``) then deletes only what is left: the boundary partition's old
rows, and old rows in the default partition. Dropping needs ownership of the table: a role that
does not own it (the app role) leaves partitions to the row-by-row path, which gives the same
result, slower.
"""

from collections import Counter
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, column, select, table, text

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.partitions import (
    MAINTAIN_LOCK,
    Partition,
    is_partitioned,
    list_partitions,
    quoted,
)
from cosmos_models.db.tables import PROGRESS, TABLES
from cosmos_models.errors import DatabaseError
from cosmos_models.services.archive import Archive
from cosmos_models.services.archive_keys import Record
from cosmos_models.services.prune_rows import LOWER_COUNT, lock_runs, prompts_of, row_json

ATTEMPTS = 3
"""How often a partition drop is tried when it times out waiting for locks or deadlocks."""
LOCK_TIMEOUT = "10s"


class _Tally(Protocol):
    """The counters of a ``PruneResult`` this module adds to."""

    expired_progress: int
    archived: int
    batches: int
    dropped_partitions: list[str]


class _RunsChanged(Exception):
    """Events of another run reached the partition between the first look and the lock."""


def expired_partitions(connection: Connection, cutoff: datetime) -> list[Partition]:
    """The partitions of progress entirely older than ``cutoff`` that this role may drop."""
    if not is_partitioned(connection):
        return []
    owned = set(
        connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass('progress') "
                "AND pg_has_role(c.relowner, 'USAGE') "
                "AND pg_has_role((SELECT relowner FROM pg_class WHERE oid = i.inhparent), 'USAGE')"
            )
        ).scalars()
    )
    return [
        partition
        for partition in list_partitions(connection)
        if partition.name in owned
        and not partition.is_default
        and partition.upper is not None
        and partition.upper <= cutoff
    ]


def drop_expired_partitions(
    db: DatabaseConnection,
    *,
    cutoff: datetime,
    archive: Archive | None,
    batch_size: int,
    result: _Tally,
) -> None:
    """Archive (when asked) and drop every partition of progress entirely older than ``cutoff``.

    Nothing happens on SQLite, MariaDB or an unpartitioned table. Raises ``DatabaseError`` when a
    partition cannot be dropped after ``ATTEMPTS`` tries (locks held too long by others).
    """
    with db.get_session(read_only=True) as session:
        partitions = expired_partitions(session.connection(), cutoff)
    for partition in partitions:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _drop(
                    db, name=partition.name, archive=archive, batch_size=batch_size, result=result
                )
                break
            except _RunsChanged:
                if attempt == ATTEMPTS:
                    raise DatabaseError(
                        f"partition {partition.name} kept changing while being dropped "
                        f"({ATTEMPTS} tries): run the prune again"
                    ) from None
            except DatabaseError:
                if attempt == ATTEMPTS:
                    raise


def _run_ids(connection: Connection, name: str) -> list[str]:
    return sorted(connection.execute(text(f"SELECT DISTINCT run_id FROM {quoted(name)}")).scalars())


def _drop(
    db: DatabaseConnection,
    *,
    name: str,
    archive: Archive | None,
    batch_size: int,
    result: _Tally,
) -> None:
    """One partition, in one transaction.

    Lock order as everywhere: the partition's runs first (in writers' order), then the partition
    itself in SHARE mode, which waits for inserts under way and admits no new one (a writer of a
    run not locked here may be adding an old event; the run ids are read again under the lock
    and the attempt starts over if they changed). Then the rows are archived and fsync'ed, the
    runs' counts lowered, and the partition dropped (an ACCESS EXCLUSIVE lock on progress for
    the moment of the drop, bounded by ``lock_timeout``).
    """
    with db.get_session() as session:
        connection = session.connection()
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MAINTAIN_LOCK})
        if (
            connection.execute(text("SELECT to_regclass(:name)"), {"name": quoted(name)}).scalar()
            is None
        ):
            return  # another prune dropped it meanwhile
        run_ids = _run_ids(connection, name)
        runs = lock_runs(connection, run_ids)
        connection.execute(text(f"LOCK TABLE {quoted(name)} IN SHARE MODE"))
        if _run_ids(connection, name) != run_ids:
            raise _RunsChanged(name)
        counted = connection.execute(
            text(f"SELECT run_id, count(*) FROM {quoted(name)} GROUP BY run_id")
        )
        per_run: Counter[str] = Counter({row[0]: int(row[1]) for row in counted})
        if archive is not None:
            _archive_partition(
                connection,
                name=name,
                runs=runs,
                archive=archive,
                batch_size=batch_size,
                result=result,
            )
        if per_run:
            connection.execute(
                LOWER_COUNT, [{"target": run, "n": n} for run, n in sorted(per_run.items())]
            )
        connection.execute(text(f"DROP TABLE {quoted(name)}"))
        result.expired_progress += sum(per_run.values())
        result.dropped_partitions.append(name)
        result.batches += 1


def _archive_partition(
    connection: Connection,
    *,
    name: str,
    runs: list[Any],
    archive: Archive,
    batch_size: int,
    result: _Tally,
) -> None:
    """Write the partition's events to the archive, batch by batch, its runs and their prompts
    first as context rows; every batch is fsync'ed before the drop can commit."""
    records: list[Record] = [
        {"table": table, "row": row_json(TABLES[table], row), "context": True}
        for table, rows in (("prompts", prompts_of(connection, runs)), ("runs", runs))
        for row in rows
    ]
    # The partition itself (a Core handle with progress's columns and types), not the parent.
    partition = table(name, *(column(c.name, c.type) for c in PROGRESS.columns))
    last = -1
    while True:
        events = connection.execute(
            select(partition)
            .where(partition.c.id > last)
            .order_by(partition.c.id)
            .limit(batch_size)
        ).all()
        records.extend({"table": "progress", "row": row_json(partition, row)} for row in events)
        if records:
            result.archived += archive.append(records)
        if len(events) < batch_size:
            return
        last = events[-1].id
        records = []
