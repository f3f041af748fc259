"""Progress partitioned by month on PostgreSQL (SQLite and MariaDB keep a plain table: no-op).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

The table is rebuilt as ``PARTITION BY RANGE ("timestamp")`` with the same columns (``LIKE``: the
id keeps its sequence, which passes to the new table), rows copied with their ids:
``progress_history`` holds everything before the first month kept apart (at most 24 months
back), one ``progress_pYYYYMMDD`` per month from there to three months ahead, and
``progress_default`` whatever no range covers, so no insert ever fails. ``cosmos-models db
maintain`` creates later partitions.

A partitioned table's unique constraints must contain the partition key: the primary key becomes
(id, timestamp) and UNIQUE (run_id, seq) becomes UNIQUE (run_id, seq, timestamp). What remains
guaranteed: ids come from the sequence (never handed out twice); seq is taken from the run row's
counter under that row's lock (tracking.number_events), so two events of a run never get one
seq (the counter only grows: retention keeps it, a restore brings back old seqs); the
constraint itself refuses the same (run, seq) twice only with equal timestamps. Offline (``--sql``) the history partition takes everything before the current month.

Downgrade copies the rows back into a plain table with the constraints of 0005 (it fails, and
rolls back, if rows written around the counter share a (run_id, seq)). Privileges granted on the
old table do not carry over: run migrations as the owner role, whose default privileges cover
the new tables (see ``cosmos-models db roles``). Frozen definitions: no live model is imported.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data: nothing (rows go back into a plain table).
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {}

MONTHS_BACK = 24
MONTHS_AHEAD = 3
INDEXES = {
    "ix_progress_run_id": "(run_id)",
    "ix_progress_timestamp": '("timestamp")',
    "ix_progress_run_id_timestamp_id": '(run_id, "timestamp", id)',
}
FOREIGN_KEY = (
    "ALTER TABLE progress ADD CONSTRAINT fk_progress_run_id_runs "
    "FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE"
)


def _month(moment: datetime, shift: int = 0) -> datetime:
    """The first instant (UTC) of the month ``shift`` months after the one holding ``moment``."""
    index = moment.year * 12 + moment.month - 1 + shift
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _first_month(now: datetime, table: str) -> datetime:
    """The first month with a partition of its own: the oldest event's in ``table``, at most 24
    months back."""
    if op.get_context().as_sql:
        return _month(now)
    oldest = op.get_bind().execute(sa.text(f'SELECT min("timestamp") FROM {table}')).scalar()
    if oldest is None:
        return _month(now)
    return max(_month(now, -MONTHS_BACK), _month(oldest.astimezone(UTC)))


def _is_partitioned() -> bool:
    if op.get_context().as_sql:
        return False
    found = op.get_bind().execute(
        sa.text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('progress')")
    )
    return found.first() is not None


def _sequence() -> str:
    """The id's sequence (SERIAL since 0001: progress_id_seq)."""
    if op.get_context().as_sql:
        return "progress_id_seq"
    name = op.get_bind().execute(sa.text("SELECT pg_get_serial_sequence('progress', 'id')"))
    return str(name.scalar() or "progress_id_seq")


def _rebuild(*, partitioned: bool, old_name: str, unique: str) -> None:
    """Rename progress, free its index names, create the new table LIKE it, copy the rows."""
    sequence = _sequence()
    op.execute(f"ALTER TABLE progress RENAME TO {old_name}")
    op.execute(f"ALTER TABLE {old_name} DROP CONSTRAINT pk_progress")
    op.execute(f"ALTER TABLE {old_name} DROP CONSTRAINT {unique}")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    partition = ' PARTITION BY RANGE ("timestamp")' if partitioned else ""
    op.execute(
        f"CREATE TABLE progress (LIKE {old_name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        + partition
    )
    if partitioned:
        now = datetime.now(UTC)
        first = _first_month(now, old_name)
        op.execute(
            "CREATE TABLE progress_history PARTITION OF progress "
            f"FOR VALUES FROM (MINVALUE) TO ('{first.isoformat()}')"
        )
        month = first
        while month < _month(now, MONTHS_AHEAD + 1):
            upper = _month(month, 1)
            op.execute(
                f"CREATE TABLE progress_p{month:%Y%m%d} PARTITION OF progress "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{upper.isoformat()}')"
            )
            month = upper
        op.execute("CREATE TABLE progress_default PARTITION OF progress DEFAULT")
    op.execute(f"INSERT INTO progress SELECT * FROM {old_name}")
    # The sequence belongs to the new table from now on; dropping the old one keeps it.
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY progress.id")
    op.execute(f"DROP TABLE {old_name}")


def _constraints(*, primary_key: str, unique: str, unique_columns: str) -> None:
    op.execute(f"ALTER TABLE progress ADD CONSTRAINT pk_progress PRIMARY KEY ({primary_key})")
    op.execute(f"ALTER TABLE progress ADD CONSTRAINT {unique} UNIQUE ({unique_columns})")
    op.execute(FOREIGN_KEY)
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON progress {columns}")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql" or _is_partitioned():
        return
    _rebuild(partitioned=True, old_name="progress_unpartitioned", unique="uq_progress_run_id_seq")
    _constraints(
        primary_key='id, "timestamp"',
        unique="uq_progress_run_id_seq_timestamp",
        unique_columns='run_id, seq, "timestamp"',
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    if not op.get_context().as_sql and not _is_partitioned():
        return
    _rebuild(
        partitioned=False,
        old_name="progress_partitioned",
        unique="uq_progress_run_id_seq_timestamp",
    )
    _constraints(primary_key="id", unique="uq_progress_run_id_seq", unique_columns="run_id, seq")
