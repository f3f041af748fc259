"""Pruning: final runs older than a cutoff, and old events of any run, archived before deleted.

``prune`` deletes final runs older than a cutoff, with their progress, in batches. With an
archive, each batch's rows (the runs, their progress, and their prompt so a restore never
breaks a foreign key) are written and fsync'ed before the batch is deleted in one transaction,
so a crash at any point loses nothing and a rerun continues where it stopped.

Event retention (``progress_older_than``) deletes old events of any run but keeps the runs and
their summaries, so dashboards still show the last state of old runs; its archive batches carry
the events plus their run and prompt as *context* rows (see ``archive``).
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, Table, bindparam, func, select, update

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, PROMPTS, RUNS, TABLES
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.status import FINAL_STATUSES, RunStatus
from cosmos_models.models.types import backend_family, utcnow
from cosmos_models.services.archive import Archive
from cosmos_models.services.archive_keys import Record

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` or ``"3600s"`` as a ``timedelta``.

    Raises ``ValueError`` for anything else.
    """
    match = _DURATION.match(value)
    if match is None:
        raise InvalidArgumentError(
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
            raise InvalidArgumentError(f"status {value!r} is not one of {allowed}") from None
        if not status.is_final:
            raise InvalidArgumentError(
                f"status {value!r} is not final: only final runs can be pruned"
            )
        statuses.append(status)
    return tuple(statuses)


# -- prune -----------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What ``prune`` deleted (or, in a dry run, would delete).

    ``progress`` counts the events deleted with their runs; ``expired_progress`` the events
    deleted by event retention, whose runs were kept.
    """

    runs: int = 0
    progress: int = 0
    expired_progress: int = 0
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


def _candidates(
    db: DatabaseConnection, statuses: Sequence[RunStatus], cutoff: datetime, limit: int
) -> list[str]:
    finished = func.coalesce(RUNS.c.completed_at, RUNS.c.created_at)
    query = (
        select(RUNS.c.id)
        .where(RUNS.c.status.in_(statuses), finished < cutoff)
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(limit)
    )
    with db.connect(read_only=True) as connection:
        return list(connection.execute(query).scalars())


def _check_age(name: str, age: timedelta | None) -> None:
    if age is not None and (not isinstance(age, timedelta) or age < timedelta(0)):
        raise InvalidArgumentError(f"{name} must be a non-negative timedelta, got {age!r}")


def prune(
    db: DatabaseConnection,
    *,
    older_than: timedelta | None = None,
    progress_older_than: timedelta | None = None,
    statuses: Sequence[RunStatus] = FINAL_STATUSES,
    archive_path: Path | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    now: datetime | None = None,
) -> PruneResult:
    """Delete final runs finished more than ``older_than`` ago with their progress, and/or the
    events of any run older than ``progress_older_than`` (keeping the runs and their summaries).

    Raises ``ValueError`` when neither age is given, for a negative age, a non-final status or a
    non-positive batch size; ``ArchiveError`` for an archive path that cannot be used.
    """
    if older_than is None and progress_older_than is None:
        raise InvalidArgumentError("prune needs older_than, progress_older_than or both")
    _check_age("older_than", older_than)
    _check_age("progress_older_than", progress_older_than)
    statuses = parse_statuses(
        status.value if isinstance(status, RunStatus) else status for status in statuses
    )
    if batch_size <= 0:
        raise InvalidArgumentError("batch_size must be positive")
    moment = now or utcnow()
    result = PruneResult(dry_run=dry_run, archive_path=archive_path)
    if dry_run:
        _count(
            db,
            statuses=statuses,
            moment=moment,
            older_than=older_than,
            progress_older_than=progress_older_than,
            result=result,
        )
        return result
    archive = Archive(archive_path) if archive_path is not None else None
    # Whole runs first: their old events then go with them, archived as rows of a pruned run,
    # and retention is left with the events of the runs that stay.
    if older_than is not None:
        _prune_runs(
            db,
            statuses=statuses,
            cutoff=moment - older_than,
            archive=archive,
            batch_size=batch_size,
            result=result,
        )
    if progress_older_than is not None:
        _expire_progress(
            db,
            cutoff=moment - progress_older_than,
            archive=archive,
            batch_size=batch_size,
            result=result,
        )
    return result


def _count(
    db: DatabaseConnection,
    *,
    statuses: Sequence[RunStatus],
    moment: datetime,
    older_than: timedelta | None,
    progress_older_than: timedelta | None,
    result: PruneResult,
) -> None:
    """A dry run: what ``prune`` would delete now, counted in one read-only transaction."""
    with db.connect(read_only=True) as connection:
        chosen = None
        if older_than is not None:
            finished = func.coalesce(RUNS.c.completed_at, RUNS.c.created_at)
            chosen = select(RUNS.c.id).where(
                RUNS.c.status.in_(statuses), finished < moment - older_than
            )
            result.runs = int(
                connection.execute(select(func.count()).select_from(chosen.subquery())).scalar_one()
            )
            result.progress = int(
                connection.execute(
                    select(func.count()).select_from(PROGRESS).where(PROGRESS.c.run_id.in_(chosen))
                ).scalar_one()
            )
        if progress_older_than is not None:
            expired = (
                select(func.count())
                .select_from(PROGRESS)
                .where(PROGRESS.c.timestamp < moment - progress_older_than)
            )
            if chosen is not None:
                # Events of runs pruned whole are counted once, with their runs.
                expired = expired.where(PROGRESS.c.run_id.not_in(chosen))
            result.expired_progress = int(connection.execute(expired).scalar_one())


def lock_runs(connection: Connection, run_ids: Sequence[str]) -> list[Row[Any]]:
    """Lock the runs (``FOR UPDATE``) in the order writers lock them: ids sorted by code point.

    Progress writers update their runs in Python's sorted order (``tracking.number_events``);
    ordering by ``COLLATE "C"`` on PostgreSQL (byte order of UTF-8 is code point order; SQLite and
    MariaDB's binary collations agree already) makes every locker take rows in one order, so two
    of them over the same runs wait for each other instead of deadlocking.
    """
    order: Any = RUNS.c.id
    if backend_family(connection.dialect) == "postgresql":
        order = RUNS.c.id.collate("C")
    return list(
        connection.execute(
            select(RUNS).where(RUNS.c.id.in_(run_ids)).order_by(order).with_for_update()
        ).all()
    )


def _prompts_of(connection: Connection, runs: Sequence[Row[Any]]) -> list[Row[Any]]:
    """The prompts of ``runs``: archived beside them so that a restore keeps its foreign keys."""
    prompt_ids = {row.prompt_id for row in runs}
    return list(connection.execute(select(PROMPTS).where(PROMPTS.c.id.in_(prompt_ids))).all())


def _prune_runs(
    db: DatabaseConnection,
    *,
    statuses: Sequence[RunStatus],
    cutoff: datetime,
    archive: Archive | None,
    batch_size: int,
    result: PruneResult,
) -> None:
    """Delete the final runs finished before ``cutoff`` with their progress, batch by batch."""
    while True:
        run_ids = _candidates(db, statuses, cutoff, batch_size)
        if not run_ids:
            return
        with db.get_session() as session:
            connection = session.connection()
            # Runs locked first, in id order, as event retention and writers lock them: a prune
            # of runs and one of events over the same run then wait for each other, never in
            # a cycle (progress rows locked by one, the run by the other).
            runs = lock_runs(connection, run_ids)
            progress = connection.execute(
                select(PROGRESS).where(PROGRESS.c.run_id.in_(run_ids))
            ).all()
            if archive is not None:
                prompts = _prompts_of(connection, runs)
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


# Retention lowers a run's count of stored events by what it deleted, relative to the stored
# value (a writer may have added events since), and leaves updated_at alone: deleting old events
# is not a change of the run's record. latest_seq and the latest_* fields stay: latest_seq
# numbers the run's next event (reusing a seq would give two events one identity), and the
# latest fields are what dashboards show of the run, whether or not that event is still stored.
_LOWER_COUNT = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("target"))
    .values(progress_count=RUNS.c.progress_count - bindparam("n"), updated_at=RUNS.c.updated_at)
)


def _expire_progress(
    db: DatabaseConnection,
    *,
    cutoff: datetime,
    archive: Archive | None,
    batch_size: int,
    result: PruneResult,
) -> None:
    """Delete the events older than ``cutoff`` of the runs that remain, batch by batch.

    Each batch, in one transaction: lock the batch's runs (in id order, like every writer, which
    locks the run row before inserting its events, so neither waits for the other in a cycle),
    read the events again under the lock (another prune may have taken some), archive them with
    their runs and prompts as context and fsync, delete them, lower the runs' counts.
    """
    expired = (
        select(PROGRESS.c.id, PROGRESS.c.run_id)
        .where(PROGRESS.c.timestamp < cutoff)
        .order_by(PROGRESS.c.id)
        .limit(batch_size)
    )
    while True:
        # Chosen outside the write transaction: on MariaDB (REPEATABLE READ) a plain read before
        # the locks would fix a snapshot older than them.
        with db.connect(read_only=True) as reading:
            chosen = reading.execute(expired).all()
        if not chosen:
            return
        with db.get_session() as session:
            connection = session.connection()
            run_ids = sorted({row.run_id for row in chosen})
            runs = lock_runs(connection, run_ids)
            # Locking reads see the latest committed rows, whatever the isolation level.
            events = connection.execute(
                select(PROGRESS)
                .where(PROGRESS.c.id.in_([row.id for row in chosen]))
                .order_by(PROGRESS.c.id)
                .with_for_update()
            ).all()
            if archive is not None:
                prompts = _prompts_of(connection, runs)
                records: list[Record] = [
                    {"table": name, "row": _to_json(TABLES[name], row), "context": True}
                    for name, rows in (("prompts", prompts), ("runs", runs))
                    for row in rows
                ]
                records.extend(
                    {"table": "progress", "row": _to_json(PROGRESS, row)} for row in events
                )
                # Durable before the delete below can commit, as for whole runs.
                result.archived += archive.append(records)
            if events:
                connection.execute(
                    PROGRESS.delete().where(PROGRESS.c.id.in_([e.id for e in events]))
                )
                per_run = Counter(row.run_id for row in events)
                connection.execute(
                    _LOWER_COUNT, [{"target": run, "n": n} for run, n in sorted(per_run.items())]
                )
            result.expired_progress += len(events)
            result.batches += 1
