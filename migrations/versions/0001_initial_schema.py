"""Initial schema: prompts, runs, progress.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The three tables of the spec, with what the earlier implementation lacked: aware UTC timestamps
with microseconds (DATETIME(6) on MariaDB), JSONB on PostgreSQL, LONGTEXT for free text on
MariaDB, named CHECK constraints, ON DELETE CASCADE foreign keys, and the dashboard indexes.
Frozen definitions: this file never imports the live models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops that may hold data (every table, with its rows): table -> None (the whole table) or
# the columns. `cosmos-models db downgrade` counts these rows and asks for --yes.
DOWNGRADE_DROPS: dict[str, tuple[str, ...] | None] = {
    "progress": None,
    "runs": None,
    "prompts": None,
}

ID = sa.String(255)
NAME = sa.String(100)
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = (
    sa.DateTime()
    .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
)
STATUSES = "'pending', 'uploading', 'running', 'downloading', 'completed', 'failed', 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("model_type", NAME, nullable=False),
        sa.Column("prompt_text", TEXT, nullable=False),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("parameters", JSON, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompts")),
    )
    op.create_index(op.f("ix_prompts_model_type"), "prompts", ["model_type"])
    op.create_index(op.f("ix_prompts_created_at_id"), "prompts", ["created_at", "id"])

    op.create_table(
        "runs",
        sa.Column("prompt_id", ID, nullable=False),
        sa.Column("model_type", NAME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("execution_config", JSON, nullable=False),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_runs_status_valid")),
        sa.ForeignKeyConstraint(
            ["prompt_id"],
            ["prompts.id"],
            name=op.f("fk_runs_prompt_id_prompts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_prompt_id"), "runs", ["prompt_id"])
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.create_index(op.f("ix_runs_status_created_at_id"), "runs", ["status", "created_at", "id"])
    op.create_index(op.f("ix_runs_created_at_id"), "runs", ["created_at", "id"])

    op.create_table(
        "progress",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("stage", NAME, nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("message", TEXT, nullable=False),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("timestamp", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "percentage >= 0.0 AND percentage <= 100.0",
            name=op.f("ck_progress_percentage_range"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_progress_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_progress")),
    )
    op.create_index(op.f("ix_progress_run_id"), "progress", ["run_id"])
    op.create_index(op.f("ix_progress_timestamp"), "progress", ["timestamp"])
    op.create_index(
        op.f("ix_progress_run_id_timestamp_id"), "progress", ["run_id", "timestamp", "id"]
    )


def downgrade() -> None:
    op.drop_table("progress")
    op.drop_table("runs")
    op.drop_table("prompts")
