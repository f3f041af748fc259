"""Shapes an API returns beyond single rows: pages, run details, and their JSON Schemas.

Timestamps in every read model are aware UTC datetimes, so ``model_dump(mode="json")`` writes
ISO-8601 text ending in ``Z`` that any client parses without guessing a zone.
"""

from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row

from cosmos_models.models.progress import ProgressCreate, ProgressRead
from cosmos_models.models.prompt import PromptCreate, PromptRead, PromptUpdate
from cosmos_models.models.run import Run, RunCreate, RunRead
from cosmos_models.models.types import UtcDatetime

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a listing; pass ``next_cursor`` back to get the next (None: no more)."""

    items: list[ItemT]
    next_cursor: str | None = None


class PromptSummary(BaseModel):
    """The prompt of a run, as shown beside it (without inputs and parameters)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    model_type: str
    prompt_text: str
    created_at: UtcDatetime


class RunDetail(RunRead):
    """A run with its prompt's summary and its latest progress event (None before the first)."""

    prompt: PromptSummary
    latest_progress: ProgressRead | None = None


_VALIDATION_MODELS: tuple[type[BaseModel], ...] = (
    PromptCreate,
    PromptUpdate,
    RunCreate,
    ProgressCreate,
)
_SERIALIZATION_MODELS: tuple[type[BaseModel], ...] = (
    PromptRead,
    PromptSummary,
    RunRead,
    ProgressRead,
    RunDetail,
    Page[RunRead],
    Page[PromptRead],
)


def api_json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every API model, by model name.

    Create and update models are described as a client must send them (validation mode),
    read models as the API writes them (serialization mode).
    """
    schemas = {model.__name__: model.model_json_schema() for model in _VALIDATION_MODELS}
    schemas.update(
        {
            model.__name__: model.model_json_schema(mode="serialization")
            for model in _SERIALIZATION_MODELS
        }
    )
    return schemas


# -- rows of the tables as read models (one place for each) --------------------------------


def run_read(row: Any) -> RunRead:
    """Build a ``RunRead`` from a ``Run`` or a row of the runs table."""
    if isinstance(row, Run):
        return RunRead.model_validate(row, from_attributes=True)
    return run_from(row._mapping)


def run_from(values: Mapping[str, Any]) -> RunRead:
    """Build a ``RunRead`` from a mapping of runs-table column names to values."""
    data = dict(values)
    # The table's column is "metadata"; the models call it run_metadata (a reserved name).
    data["run_metadata"] = data.pop("metadata")
    return RunRead.model_validate(data)


def prompt_read(row: Any) -> PromptRead:
    """Build a ``PromptRead`` from a row of the prompts table."""
    return PromptRead.model_validate(dict(row._mapping))


_READ_FIELDS: Final = ("id", "run_id", "seq", "stage", "percentage", "message", "timestamp")
_ALL_FIELDS: Final = frozenset(_READ_FIELDS)


def progress_read(row: Row[Any]) -> ProgressRead:
    """A stored progress row as its read model, without validating it again.

    The row comes from typed columns (aware UTC timestamps, finite percentages checked on the way
    in and by the CHECK constraint): validating each one again cost most of a 1,000-run
    ``latest_progress`` call.
    """
    return progress_from(row._mapping)


def progress_from(values: Mapping[Any, Any]) -> ProgressRead:
    """A ``ProgressRead`` from a mapping holding (at least) its fields, not validated again."""
    return progress_with({name: values[name] for name in _READ_FIELDS})


def progress_with(fields: dict[str, Any]) -> ProgressRead:
    """A ``ProgressRead`` holding exactly ``fields`` (every field, typed), not validated again."""
    # What model_construct does when every field is given, without its per-field default
    # handling or SQLModel's __new__ (a third of the cost each, times 1,000 runs per call).
    read: ProgressRead = object.__new__(ProgressRead)
    _set(read, "__dict__", fields)
    _set(read, "__pydantic_fields_set__", _ALL_FIELDS)
    _set(read, "__pydantic_extra__", None)
    _set(read, "__pydantic_private__", None)
    return read


_set: Final = object.__setattr__
