"""The app's first table: app_run_reviews (reviews of cosmos runs).

Revision ID: a001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "a001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
# The package's tables must exist first: `cosmos-models db upgrade` before this history.
depends_on: str | Sequence[str] | None = None

TIMESTAMP = (
    sa.DateTime()
    .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
)


def upgrade() -> None:
    op.create_table(
        "app_run_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("reviewer", sa.String(100), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("reviewed_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name="fk_app_run_reviews_run_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_app_run_reviews"),
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_nopad_bin",
        mariadb_charset="utf8mb4",
        mariadb_collate="utf8mb4_nopad_bin",
    )
    op.create_index("ix_app_run_reviews_run_id", "app_run_reviews", ["run_id"])


def downgrade() -> None:
    # The table takes its index with it (MariaDB refuses to drop an index its foreign key uses).
    op.drop_table("app_run_reviews")
