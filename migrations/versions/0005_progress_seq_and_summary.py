"""Progress in commit order: a per-run seq on every event, and a progress summary on each run.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-28

progress.seq numbers a run's events 1, 2, 3… (UNIQUE (run_id, seq): uq_progress_run_id_seq, also
the index progress_since pages by). runs.latest_seq is the counter writers advance under the run's
row lock, runs.progress_count the number of events, runs.latest_stage / latest_percentage /
latest_message / latest_at / latest_progress_id the latest event's fields and id (the summary
latest_progress reads).

Existing rows are backfilled: seq = row_number() over each run's events by (timestamp, id), the
order readers used until now; the summary from each run's event with the greatest seq. Window
functions and UPDATE … FROM need SQLite ≥ 3.33, PostgreSQL, MariaDB ≥ 10.2.

On SQLite the progress table is rebuilt (batch mode, from its reflected definition, keeping
AUTOINCREMENT if an earlier revision set it). Frozen definitions: this file never imports the
live models.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data: table -> None (the whole table) or the columns.
# The run summary is derived from the events and rebuilt by an upgrade; seq records commit order,
# which a new backfill can only approximate (by timestamp, then id).
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {"progress": ("seq",)}

NAME = sa.String(100)
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
TIMESTAMP = (
    sa.DateTime()
    .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
)
SUMMARY_COLUMNS = (
    "latest_progress_id",
    "latest_at",
    "latest_message",
    "latest_percentage",
    "latest_stage",
)
COUNTERS = ("latest_seq", "progress_count")

# Each run's events in the order readers used before seq existed.
NUMBERED = (
    "SELECT id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY timestamp, id) AS n FROM progress"
)
BACKFILL_SEQ = {
    "mysql": f"UPDATE progress p JOIN ({NUMBERED}) numbered ON p.id = numbered.id SET p.seq = numbered.n",
    "default": f"UPDATE progress SET seq = numbered.n FROM ({NUMBERED}) numbered "
    "WHERE progress.id = numbered.id",
}
BACKFILL_COUNTERS = (
    "UPDATE runs SET progress_count = (SELECT COUNT(*) FROM progress p WHERE p.run_id = runs.id), "
    "latest_seq = (SELECT COALESCE(MAX(p.seq), 0) FROM progress p WHERE p.run_id = runs.id)"
)
_LATEST = "(SELECT p.{0} FROM progress p WHERE p.run_id = runs.id AND p.seq = runs.latest_seq)"
BACKFILL_SUMMARY = (
    "UPDATE runs SET "
    + ", ".join(
        f"latest_{name} = {_LATEST.format(column)}"
        for name, column in (
            ("stage", "stage"),
            ("percentage", "percentage"),
            ("message", "message"),
            ("at", "timestamp"),
            ("progress_id", "id"),
        )
    )
    + " WHERE latest_seq > 0"
)


def _frozen_progress(*, with_seq: bool) -> sa.Table:
    """progress as revision 0002 left it (plus seq): offline SQL has no table to reflect."""
    frozen = sa.MetaData()
    sa.Table("runs", frozen, sa.Column("id", sa.String(255), primary_key=True))
    columns = [
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("stage", NAME, nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("message", TEXT, nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("timestamp", TIMESTAMP, nullable=False),
    ]
    if with_seq:
        columns.append(sa.Column("seq", sa.Integer(), nullable=True))
    return sa.Table(
        "progress",
        frozen,
        *columns,
        sa.CheckConstraint(
            "percentage >= 0.0 AND percentage <= 100.0", name="ck_progress_percentage_range"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_progress_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_progress"),
        sa.Index("ix_progress_run_id", "run_id"),
        sa.Index("ix_progress_timestamp", "timestamp"),
        sa.Index("ix_progress_run_id_timestamp_id", "run_id", "timestamp", "id"),
    )


def _batch_progress(*, with_seq: bool) -> dict[str, object]:
    """How to rebuild progress on SQLite: from reflection (keeping AUTOINCREMENT), or offline
    from the frozen definition."""
    if op.get_context().as_sql:
        return {"copy_from": _frozen_progress(with_seq=with_seq)}
    return {"table_kwargs": _progress_table_kwargs()}


def _progress_table_kwargs() -> dict[str, object]:
    """Batch mode rebuilds SQLite tables from reflection, which does not see AUTOINCREMENT."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return {}
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'progress'"
    ).scalar()
    return {"sqlite_autoincrement": True} if "AUTOINCREMENT" in str(sql).upper() else {}


@contextmanager
def _sqlite_mark_kept() -> Iterator[None]:
    """Keep SQLite's AUTOINCREMENT high-water mark of progress across a batch rebuild.

    The rebuilt table's mark restarts at the largest id copied into it: ids deleted above that
    (the newest events of pruned runs) would be handed out again, which migration 0003 exists to
    prevent.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or op.get_context().as_sql:
        yield
        return
    has_sequence = bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).first()
    mark = (
        bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'progress'").scalar()
        if has_sequence is not None
        else None
    )
    yield
    if mark is None:
        return
    bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'progress'")
    bind.exec_driver_sql(
        "INSERT INTO sqlite_sequence (name, seq) "
        "SELECT 'progress', MAX(?, COALESCE(MAX(id), 0)) FROM progress",
        (int(mark),),
    )


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name in reversed(COUNTERS):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("latest_stage", NAME, nullable=True))
        batch.add_column(sa.Column("latest_percentage", sa.Float(), nullable=True))
        batch.add_column(sa.Column("latest_message", TEXT, nullable=True))
        batch.add_column(sa.Column("latest_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("latest_progress_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("progress") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    family = "mysql" if op.get_context().dialect.name in ("mysql", "mariadb") else "default"
    op.execute(BACKFILL_SEQ[family])
    op.execute(BACKFILL_COUNTERS)
    op.execute(BACKFILL_SUMMARY)
    with (
        _sqlite_mark_kept(),
        op.batch_alter_table("progress", **_batch_progress(with_seq=True)) as batch,  # type: ignore[arg-type]
    ):
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint(op.f("uq_progress_run_id_seq"), ["run_id", "seq"])


def downgrade() -> None:
    with (
        _sqlite_mark_kept(),
        op.batch_alter_table("progress", **_batch_progress(with_seq=True)) as batch,  # type: ignore[arg-type]
    ):
        batch.drop_constraint(op.f("uq_progress_run_id_seq"), type_="unique")
        batch.drop_column("seq")
    with op.batch_alter_table("runs") as batch:
        for name in (*SUMMARY_COLUMNS, *COUNTERS):
            batch.drop_column(name)
