"""The Prompt table (what to run) and its API models."""

from typing import TYPE_CHECKING

from sqlalchemy import Index, String
from sqlmodel import Field, Relationship, SQLModel

# Imported for its session listeners: deletes of prompts and runs cascade through the ORM.
import cosmos_models.models.cascade  # noqa: F401
from cosmos_models.models.base import ValidatedTable
from cosmos_models.models.ids import new_prompt_id
from cosmos_models.models.types import (
    EXACT_TEXT_TABLE_OPTIONS,
    ID_LENGTH,
    NAME_LENGTH,
    Identifier,
    JsonObject,
    Name,
    RequiredText,
    UTCDateTime,
    UtcDatetime,
    json_column_type,
    long_text_type,
    utcnow,
)

if TYPE_CHECKING:
    from cosmos_models.models.run import Run


class PromptBase(SQLModel):
    """Fields a caller supplies for a prompt."""

    model_type: Name = Field(
        sa_type=String(NAME_LENGTH),
        index=True,
        description="The AI model this prompt is for: transfer, reason, predict or any other.",
    )
    prompt_text: RequiredText = Field(sa_type=long_text_type())
    inputs: JsonObject = Field(
        sa_type=json_column_type(),
        description="Model-specific inputs (videos, images, frames…): a JSON object.",
    )
    parameters: JsonObject = Field(
        sa_type=json_column_type(),
        description="Model-specific parameters (steps, temperature…): a JSON object.",
    )


class PromptCreate(PromptBase):
    """What a caller sends to create a prompt; ``id`` is generated when omitted."""

    id: Identifier | None = Field(default=None, max_length=ID_LENGTH)


class PromptUpdate(SQLModel):
    """A partial update of a prompt: every field optional, only those given are changed."""

    model_type: Name | None = None
    prompt_text: RequiredText | None = None
    inputs: JsonObject | None = None
    parameters: JsonObject | None = None


class PromptRead(PromptBase):
    """A prompt as an API returns it."""

    id: str
    created_at: UtcDatetime


class Prompt(PromptBase, ValidatedTable, table=True):
    """A prompt: what to run, for which model, with which inputs and parameters."""

    __tablename__ = "prompts"
    # list_prompts: newest first, keyset-paginated on (created_at, id).
    __table_args__ = (
        Index("ix_prompts_created_at_id", "created_at", "id"),
        EXACT_TEXT_TABLE_OPTIONS,
    )

    id: Identifier = Field(
        default_factory=new_prompt_id, primary_key=True, sa_type=String(ID_LENGTH)
    )
    created_at: UtcDatetime = Field(default_factory=utcnow, sa_type=UTCDateTime())

    runs: list["Run"] = Relationship(
        back_populates="prompt",
        cascade_delete=True,
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"Prompt(id={self.id!r}, model_type={self.model_type!r})"
