"""Progress ids are never reused on SQLite: the progress table becomes AUTOINCREMENT.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Without AUTOINCREMENT, SQLite hands out max(id) + 1, so the id of a pruned progress row is given
to the next event: an archive keyed by ids then mistakes a new row for an archived one. SQLite
cannot change this in place, so the table is rebuilt in batch mode (every row copied with its
id) from the frozen definition below rather than from reflection, so that the CHECK constraint,
the foreign key and the indexes come back exactly as 0001 made them. The high-water mark in
``sqlite_sequence`` is kept: at least the largest id present (ids deleted above it before this
revision are unknowable). PostgreSQL (a sequence) and MariaDB (AUTO_INCREMENT) never reuse ids,
so nothing changes there. Frozen definitions: this file never imports the live models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data (nothing: ids and rows are kept): table -> None (the whole table) or
# the columns. `cosmos-models db downgrade` counts these rows and asks for --yes.
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {}

ID = sa.String(255)
NAME = sa.String(100)
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
TIMESTAMP = (
    sa.DateTime()
    .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
)


def _progress(autoincrement: bool) -> sa.Table:
    """The progress table as 0001 created it, with or without SQLite's AUTOINCREMENT."""
    return sa.Table(
        "progress",
        sa.MetaData(),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("stage", NAME, nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("message", TEXT, nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("timestamp", TIMESTAMP, nullable=False),
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
        sqlite_autoincrement=autoincrement,
    )


def _high_water_mark() -> int:
    """The largest progress id ever handed out, as far as SQLite still knows it."""
    bind = op.get_bind()
    highest = int(bind.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM progress")).scalar_one())
    has_sequence = bind.execute(
        sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
    ).first()
    if has_sequence is not None:
        seq = bind.execute(
            sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'progress'")
        ).scalar_one_or_none()
        highest = max(highest, int(seq or 0))
    return highest


def _rebuild(autoincrement: bool) -> None:
    # Offline (--sql) there is nothing to read; the copy then sets the mark to the largest id.
    online = not op.get_context().as_sql
    mark = _high_water_mark() if online and autoincrement else 0
    with op.batch_alter_table(
        "progress",
        recreate="always",
        copy_from=_progress(autoincrement=not autoincrement),
        table_kwargs={"sqlite_autoincrement": autoincrement},
    ):
        pass
    if online and autoincrement:
        # The copy set the sequence to the largest id copied; a higher mark must survive.
        bind = op.get_bind()
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'progress'"))
        bind.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('progress', :mark)"),
            {"mark": mark},
        )


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        _rebuild(autoincrement=True)


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        _rebuild(autoincrement=False)
