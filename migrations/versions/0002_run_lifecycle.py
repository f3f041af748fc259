"""Run lifecycle: why a run failed, which worker holds it, and its last heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

runs.error_message (free text: LONGTEXT on MariaDB, like the other free-text columns),
runs.worker_id (the claiming worker) and runs.heartbeat_at (aware UTC, microseconds), all
nullable so existing rows need no value. Claim order is already served by
ix_runs_status_created_at_id and the latest progress of a run by ix_progress_run_id_timestamp_id,
so no index is added. Frozen definitions: this file never imports the live models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data (the lifecycle columns): table -> None (the whole table) or
# the columns. `cosmos-models db downgrade` counts these rows and asks for --yes.
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {
    "runs": ("error_message", "worker_id", "heartbeat_at")
}

ID = sa.String(255)
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
TIMESTAMP = (
    sa.DateTime()
    .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
)


def upgrade() -> None:
    # Batch mode: SQLite cannot alter tables in place; elsewhere these are plain ALTER TABLEs.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error_message", TEXT, nullable=True))
        batch.add_column(sa.Column("worker_id", ID, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker_id")
        batch.drop_column("error_message")
