"""Shapes an API returns beyond single rows: pages, run details, and their JSON Schemas.

Timestamps in every read model are aware UTC datetimes, so ``model_dump(mode="json")`` writes
ISO-8601 text ending in ``Z`` that any client parses without guessing a zone.
"""

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from cosmos_models.models.progress import ProgressCreate, ProgressRead
from cosmos_models.models.prompt import PromptCreate, PromptRead, PromptUpdate
from cosmos_models.models.run import RunCreate, RunRead
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
