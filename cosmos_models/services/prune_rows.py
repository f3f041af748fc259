"""What both kinds of prune share: runs locked in writers' order, their prompts, rows as JSON.

A prune (of whole runs, of old events row by row, or of whole partitions) locks the runs it
touches before their events, in the order writers lock them, archives rows as JSON with the
prompts of their runs (so a restore never breaks a foreign key), and lowers the runs' event
counts by what it deleted.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Row, TableClause, Update, bindparam, select, update

from cosmos_models.db.tables import PROMPTS, RUNS
from cosmos_models.models.status import RunStatus
from cosmos_models.models.types import backend_family


def row_json(table: TableClause, row: Any) -> dict[str, Any]:
    """A row of ``table`` as the archive stores it: datetimes in ISO 8601 (UTC), enums by value."""
    values = {}
    for column in table.columns:
        value = row._mapping[column]
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        values[column.name] = value.value if isinstance(value, RunStatus) else value
    return values


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


def prompts_of(connection: Connection, runs: Sequence[Row[Any]]) -> list[Row[Any]]:
    """The prompts of ``runs``: archived beside them so that a restore keeps its foreign keys."""
    prompt_ids = {row.prompt_id for row in runs}
    return list(connection.execute(select(PROMPTS).where(PROMPTS.c.id.in_(prompt_ids))).all())


# Retention lowers a run's count of stored events by what it deleted, relative to the stored
# value (a writer may have added events since), and leaves updated_at alone: deleting old events
# is not a change of the run's record. latest_seq and the latest_* fields stay: latest_seq
# numbers the run's next event (reusing a seq would give two events one identity), and the
# latest fields are what dashboards show of the run, whether or not that event is still stored.
LOWER_COUNT: Final[Update] = (
    update(RUNS)
    .where(RUNS.c.id == bindparam("target"))
    .values(progress_count=RUNS.c.progress_count - bindparam("n"), updated_at=RUNS.c.updated_at)
)
"""Parameters ``target`` (a run id) and ``n`` (events deleted from it)."""
