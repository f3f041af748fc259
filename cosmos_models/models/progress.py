"""The Progress table (stage, percentage and message events of a run) and its API models."""

from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Index, String, UniqueConstraint
from sqlmodel import Field, Relationship, SQLModel

from cosmos_models.models.base import ValidatedTable
from cosmos_models.models.types import (
    EXACT_TEXT_TABLE_OPTIONS,
    ID_LENGTH,
    NAME_LENGTH,
    Identifier,
    Name,
    OptionalText,
    Percentage,
    UTCDateTime,
    UtcDatetime,
    long_text_type,
    utcnow,
)

if TYPE_CHECKING:
    from cosmos_models.models.run import Run


class ProgressBase(SQLModel):
    """Fields a caller supplies for a progress event."""

    run_id: Identifier = Field(
        sa_type=String(ID_LENGTH), foreign_key="runs.id", ondelete="CASCADE", index=True
    )
    stage: Name = Field(
        sa_type=String(NAME_LENGTH), description="uploading, inference, downloading or another."
    )
    percentage: Percentage = Field(description="0.0 to 100.0, finite.")
    message: OptionalText = Field(
        default="", sa_type=long_text_type(), description="Human-readable status."
    )


class ProgressCreate(ProgressBase):
    """What a caller sends to record progress; ``timestamp`` defaults to now (UTC)."""

    timestamp: UtcDatetime | None = None


class ProgressRead(ProgressBase):
    """A progress event as an API returns it."""

    id: int
    seq: int = Field(description="1, 2, 3… within its run, in commit order, without gaps.")
    timestamp: UtcDatetime


class Progress(ProgressBase, ValidatedTable, table=True):
    """One progress event of a run, for live dashboards and timelines."""

    __tablename__ = "progress"
    __table_args__ = (
        CheckConstraint("percentage >= 0.0 AND percentage <= 100.0", name="percentage_range"),
        # Latest event of a run, and a run's timeline in order.
        Index("ix_progress_run_id_timestamp_id", "run_id", "timestamp", "id"),
        # progress_since and followers page a run by seq; the index also holds the event's id,
        # which is how latest_progress finds it without reading the event row.
        UniqueConstraint("run_id", "seq"),
        # SQLite would otherwise hand a deleted row's id to the next event (max(id) + 1); ids
        # are never reused on PostgreSQL and MariaDB either (migration 0003).
        {"sqlite_autoincrement": True, **EXACT_TEXT_TABLE_OPTIONS},
    )

    id: int | None = Field(default=None, primary_key=True)
    # Numbered by the writer in its transaction (tracking.py; ORM inserts too, by an event hook).
    seq: int | None = Field(default=None, nullable=False)
    timestamp: UtcDatetime = Field(default_factory=utcnow, sa_type=UTCDateTime(), index=True)

    run: "Run" = Relationship(back_populates="progress")

    def __repr__(self) -> str:
        return (
            f"Progress(id={self.id!r}, run_id={self.run_id!r}, stage={self.stage!r}, "
            f"percentage={self.percentage!r})"
        )
