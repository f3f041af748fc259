"""The Run table (one execution attempt of a prompt), its status and its API models."""

from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Index, String
from sqlmodel import Field, Relationship, SQLModel

from cosmos_models.models.base import ValidatedTable
from cosmos_models.models.ids import new_run_id
from cosmos_models.models.status import RunStatus
from cosmos_models.models.types import (
    EXACT_TEXT_TABLE_OPTIONS,
    ID_LENGTH,
    NAME_LENGTH,
    Identifier,
    JsonObject,
    Name,
    OptionalText,
    StrEnumType,
    UTCDateTime,
    UtcDatetime,
    json_column_type,
    long_text_type,
    utcnow,
)

if TYPE_CHECKING:
    from cosmos_models.models.progress import Progress
    from cosmos_models.models.prompt import Prompt


_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in RunStatus)


class RunBase(SQLModel):
    """Fields a caller supplies for a run."""

    prompt_id: Identifier = Field(
        sa_type=String(ID_LENGTH), foreign_key="prompts.id", ondelete="CASCADE", index=True
    )
    model_type: Name = Field(sa_type=String(NAME_LENGTH))
    status: RunStatus = Field(default=RunStatus.PENDING, sa_type=StrEnumType(RunStatus), index=True)
    execution_config: JsonObject = Field(
        default_factory=dict,
        sa_type=json_column_type(),
        description="Runtime configuration (GPU node, Docker image…): a JSON object.",
    )
    outputs: JsonObject = Field(
        default_factory=dict,
        sa_type=json_column_type(),
        description="Results (file paths, metrics, logs): a JSON object.",
    )
    run_metadata: JsonObject = Field(
        default_factory=dict,
        sa_type=json_column_type(),
        sa_column_kwargs={"name": "metadata"},
        description="Free-form metadata, stored in the column named 'metadata'.",
    )


class RunCreate(RunBase):
    """What a caller sends to create a run; ``id`` is generated when omitted.

    ``model_type`` may be left out: ``create_run`` copies it from the prompt. The table still
    requires it, so a ``Run`` built from a create model without one is refused.
    """

    id: Identifier | None = Field(default=None, max_length=ID_LENGTH)
    # Narrower in RunBase on purpose: the table requires it, the create model may leave it out.
    model_type: Name | None = Field(default=None, max_length=NAME_LENGTH)  # type: ignore[assignment]


class RunRead(RunBase):
    """A run as an API returns it."""

    id: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None
    completed_at: UtcDatetime | None
    error_message: str | None = None
    worker_id: str | None = None
    heartbeat_at: UtcDatetime | None = None
    progress_count: int = 0
    latest_seq: int = 0


class Run(RunBase, ValidatedTable, table=True):
    """One execution attempt of a prompt, moving through ``RunStatus``."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status_valid"),
        # Dashboards: runs of a status in time order; list_runs: newest first.
        Index("ix_runs_status_created_at_id", "status", "created_at", "id"),
        Index("ix_runs_created_at_id", "created_at", "id"),
        EXACT_TEXT_TABLE_OPTIONS,
    )

    id: Identifier = Field(default_factory=new_run_id, primary_key=True, sa_type=String(ID_LENGTH))
    created_at: UtcDatetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    # Bumped by SQLAlchemy on every UPDATE of the row, ORM or Core, unless set explicitly.
    updated_at: UtcDatetime = Field(
        default_factory=utcnow, sa_type=UTCDateTime(), sa_column_kwargs={"onupdate": utcnow}
    )
    started_at: UtcDatetime | None = Field(default=None, sa_type=UTCDateTime())
    completed_at: UtcDatetime | None = Field(default=None, sa_type=UTCDateTime())
    # Why a run failed or was cancelled (set by transition() and reap_stale_runs()).
    error_message: OptionalText | None = Field(default=None, sa_type=long_text_type())
    # The worker holding the run since claim_next_run(), and its last sign of life; a run whose
    # heartbeat grows too old is failed by reap_stale_runs().
    worker_id: Identifier | None = Field(default=None, sa_type=String(ID_LENGTH))
    heartbeat_at: UtcDatetime | None = Field(default=None, sa_type=UTCDateTime())
    # The progress summary, kept by the writer in the transaction that inserts the events (see
    # tracking.py). Columns on runs rather than a table of their own: the writer must lock the
    # run row anyway (it serialises writers of one run and refuses final runs), so the summary
    # costs no extra row lock and readers get it with the run by primary key. ``latest_seq`` is
    # the counter that numbers events (1, 2, 3… per run); ``progress_count`` counts the stored
    # events (equal to it until event retention deletes old events). "Latest" is the event with
    # the greatest seq, i.e. the last committed, even if a writer sent an older timestamp.
    progress_count: int = Field(default=0, ge=0, sa_column_kwargs={"server_default": "0"})
    latest_seq: int = Field(default=0, ge=0, sa_column_kwargs={"server_default": "0"})
    latest_stage: str | None = Field(default=None, sa_type=String(NAME_LENGTH))
    latest_percentage: float | None = Field(default=None)
    latest_message: str | None = Field(default=None, sa_type=long_text_type())
    latest_at: UtcDatetime | None = Field(default=None, sa_type=UTCDateTime())
    # The latest event's id, so that latest_progress reads runs alone. No foreign key: events
    # are deleted with their run (or, later, by retention), never one by one behind its back.
    latest_progress_id: int | None = Field(default=None)

    prompt: "Prompt" = Relationship(back_populates="runs")
    progress: list["Progress"] = Relationship(
        back_populates="run",
        cascade_delete=True,
        passive_deletes=True,
        # A timeline: by time, ties in commit order (seq), never by id.
        sa_relationship_kwargs={"order_by": "(Progress.timestamp, Progress.seq)"},
    )

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, prompt_id={self.prompt_id!r}, status={self.status.value!r})"
