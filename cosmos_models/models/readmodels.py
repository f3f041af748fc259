"""Shapes an API returns beyond single rows: pages, run details, and their JSON Schemas.

Timestamps in every read model are aware UTC datetimes, so ``model_dump(mode="json")`` writes
ISO-8601 text ending in ``Z`` that any client parses without guessing a zone.
"""

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row

from cosmos_models.errors import InvalidArgumentError
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

ReadT = TypeVar("ReadT", bound=BaseModel)

# The runs table's column is "metadata"; the models call it run_metadata (a reserved name).
RUN_COLUMN_OF: Final = {"run_metadata": "metadata"}


def trusted(model: type[ReadT], fields: dict[str, Any]) -> ReadT:
    """A ``model`` holding exactly ``fields`` (every field, typed), not validated again.

    For rows read from typed columns (aware UTC datetimes, JSON objects as dicts, enums as
    members), whose values were validated on the way in and are checked by the schema. What
    ``model_construct`` does when every field is given, without its per-field default handling
    or SQLModel's ``__new__`` (a third of the cost each, times 1,000 rows per call).
    """
    read: ReadT = object.__new__(model)
    _set(read, "__dict__", fields)
    _set(read, "__pydantic_fields_set__", _field_names(model))
    _set(read, "__pydantic_extra__", None)
    _set(read, "__pydantic_private__", None)
    return read


def row_reader(
    model: type[ReadT], columns: Sequence[str], column_of: Mapping[str, str] | None = None
) -> Callable[[Sequence[Any]], ReadT]:
    """A function building ``model`` from a row whose values come in the order of ``columns``.

    ``column_of`` names the column of a field where the two differ. Raises ``ValueError``
    naming a field the columns lack.
    """
    renamed = column_of or {}
    try:
        places = [(name, columns.index(renamed.get(name, name))) for name in model.model_fields]
    except ValueError:
        missing = [n for n in model.model_fields if renamed.get(n, n) not in columns]
        raise InvalidArgumentError(f"columns: no column for {', '.join(missing)}") from None

    def read(row: Sequence[Any]) -> ReadT:
        return trusted(model, {name: row[place] for name, place in places})

    return read


def typed_reader(
    model: type[ReadT],
    columns: Sequence[str],
    processors: Sequence[Callable[[Any], Any] | None],
    column_of: Mapping[str, str] | None = None,
) -> Callable[[Sequence[Any]], ReadT]:
    """Like ``row_reader``, for rows as the driver gives them: each column's result processor
    (``processors``, by column; None: none) is applied to the values the model takes, NULL
    staying None (what every result processor gives for it). Raises like ``row_reader``."""
    renamed = column_of or {}
    missing = [n for n in model.model_fields if renamed.get(n, n) not in columns]
    if missing:
        raise InvalidArgumentError(f"columns: no column for {', '.join(missing)}")
    names = tuple(model.model_fields)
    places = [columns.index(renamed.get(name, name)) for name in names]
    # The values in field order in one C call (a tuple even for one field), zipped with the
    # names into the instance's dict in another; only typed columns cost a Python call each.
    pick = itemgetter(*places) if len(places) > 1 else (lambda row: (row[places[0]],))
    convert: list[tuple[str, Callable[[Any], Any]]] = [
        (name, process)
        for name, index in zip(names, places, strict=True)
        if (process := processors[index]) is not None
    ]
    fields = _field_names(model)

    def read(row: Sequence[Any]) -> ReadT:
        values = dict(zip(names, pick(row), strict=True))
        for name, process in convert:
            value = values[name]
            if value is not None:
                values[name] = process(value)
        instance: ReadT = _new(model)
        _set(instance, "__dict__", values)
        _set(instance, "__pydantic_fields_set__", fields)
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance

    return read


def _field_names(model: type[BaseModel]) -> frozenset[str]:
    names = _FIELD_NAMES.get(model)
    if names is None:
        names = _FIELD_NAMES[model] = frozenset(model.model_fields)
    return names


_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}
_RUN_PLACES: Final = tuple((name, RUN_COLUMN_OF.get(name, name)) for name in RunRead.model_fields)


def run_read(row: Any) -> RunRead:
    """Build a ``RunRead`` from a ``Run``, or from a Core row of the runs table's columns
    (by name, in any order), not validated again."""
    if isinstance(row, Run):
        return RunRead.model_validate(row, from_attributes=True)
    return run_from(row._mapping)


def run_from(values: Mapping[str, Any]) -> RunRead:
    """Build a ``RunRead`` from a mapping of runs-table column names to typed values (a Core
    row's mapping), not validated again."""
    return trusted(RunRead, {name: values[column] for name, column in _RUN_PLACES})


def run_reader(columns: Sequence[str]) -> Callable[[Sequence[Any]], RunRead]:
    """A ``RunRead`` builder for rows of the runs table's ``columns`` (see ``row_reader``)."""
    return row_reader(RunRead, columns, RUN_COLUMN_OF)


def prompt_read(row: Any) -> PromptRead:
    """Build a ``PromptRead`` from a row of the prompts table."""
    return PromptRead.model_validate(dict(row._mapping))


_READ_FIELDS: Final = ("id", "run_id", "seq", "stage", "percentage", "message", "timestamp")


def progress_read(row: Row[Any]) -> ProgressRead:
    """A stored progress row as its read model, without validating it again."""
    return progress_from(row._mapping)


def progress_from(values: Mapping[Any, Any]) -> ProgressRead:
    """A ``ProgressRead`` from a mapping holding (at least) its fields, not validated again."""
    return trusted(ProgressRead, {name: values[name] for name in _READ_FIELDS})


_set: Final = object.__setattr__
_new: Final = object.__new__
