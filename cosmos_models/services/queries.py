"""Reading runs and prompts: single runs with details, and listings that page by keyset.

Listings order by ``(created_at, id)`` (newest first unless ``order="oldest"``) and continue
after the last row seen rather than at an offset, so a page costs the same deep in the list and
rows inserted meanwhile never shift later pages (no duplicates, no gaps). The cursor is opaque
to callers: URL-safe base64 of a small JSON document.
"""

import base64
import binascii
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, Table, and_, or_, select

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.json_filters import JsonFilter, json_condition
from cosmos_models.db.tables import PROMPTS, RUNS
from cosmos_models.errors import InvalidArgumentError, PromptNotFoundError, RunNotFoundError
from cosmos_models.models.checks import check_iterable, check_statuses, check_str
from cosmos_models.models.prompt import PromptRead
from cosmos_models.models.readmodels import Page, PromptSummary, RunDetail, run_read
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import RunStatus
from cosmos_models.services.common import check_connection, check_limit, resolve_now
from cosmos_models.services.progress_queries import latest_progress

Order = Literal["newest", "oldest"]
ReadT = TypeVar("ReadT", bound=BaseModel)

# Attribute names callers use → JSON column names in the table.
RUN_JSON_COLUMNS: Final = {
    "execution_config": "execution_config",
    "outputs": "outputs",
    "run_metadata": "metadata",
}
PROMPT_JSON_COLUMNS: Final = {"inputs": "inputs", "parameters": "parameters"}
# Cursors this module writes are about 150 characters; a longer one is refused before decoding.
MAX_CURSOR_LENGTH: Final = 1024


def _one_row(db: DatabaseConnection, table: Table, row_id: str, name: str) -> Any:
    """The row of ``table`` with id ``row_id`` (argument ``name``), or None."""
    check_connection(db)
    check_str(row_id, name)
    with db.get_session(read_only=True) as session:
        return session.execute(select(table).where(table.c.id == row_id)).one_or_none()


def get_run(db: DatabaseConnection, run_id: str) -> RunRead:
    """Return one run. Raises ``RunNotFoundError``, ``ValueError`` naming a bad ``run_id``."""
    row = _one_row(db, RUNS, run_id, "run_id")
    if row is None:
        raise RunNotFoundError(run_id)
    return run_read(row)


def get_run_detail(db: DatabaseConnection, run_id: str) -> RunDetail:
    """Return a run with its prompt's summary and latest progress.

    Raises ``RunNotFoundError``, ``ValueError`` naming a bad ``run_id``.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    with db.get_session(read_only=True) as session:
        row = session.execute(
            select(RUNS, PROMPTS.c.prompt_text, PROMPTS.c.created_at.label("prompt_created_at"))
            .join(PROMPTS, PROMPTS.c.id == RUNS.c.prompt_id)
            .where(RUNS.c.id == run_id)
        ).one_or_none()
    if row is None:
        raise RunNotFoundError(run_id)
    run = run_read(row)
    prompt = PromptSummary(
        id=run.prompt_id,
        model_type=row.model_type,
        prompt_text=row.prompt_text,
        created_at=row.prompt_created_at,
    )
    latest = latest_progress(db, [run_id]).get(run_id)
    return RunDetail(**run.model_dump(), prompt=prompt, latest_progress=latest)


def get_prompt(db: DatabaseConnection, prompt_id: str) -> PromptRead:
    """Return one prompt. Raises ``PromptNotFoundError``, ``InvalidArgumentError``."""
    row = _one_row(db, PROMPTS, prompt_id, "prompt_id")
    if row is None:
        raise PromptNotFoundError(prompt_id)
    return PromptRead.model_validate(dict(row._mapping))


# -- cursors -----------------------------------------------------------------------------------


def encode_cursor(kind: str, order: Order, created_at: datetime, row_id: str) -> str:
    """Return the opaque cursor that continues a listing after the row ``(created_at, id)``."""
    document = {"k": kind, "o": order, "t": created_at.isoformat(), "i": row_id}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, order: Order) -> tuple[datetime, str]:
    """Return ``(created_at, id)`` from a cursor of this listing.

    Raises ``ValueError`` naming ``cursor`` for anything that is not a cursor returned by the
    same listing in the same order.
    """
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidArgumentError(
            f"cursor: not a cursor returned by list_{kind} (a string of at most "
            f"{MAX_CURSOR_LENGTH} characters)"
        )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if document["k"] != kind or document["o"] != order:
            raise InvalidArgumentError("from another listing or order")
        created_at = resolve_now(datetime.fromisoformat(document["t"]), "cursor")
        row_id = document["i"]
        if not isinstance(row_id, str):
            raise TypeError("id is not a string")
    except (
        binascii.Error,
        UnicodeError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,  # [[[[…]]]]: json.loads recurses once per level
    ) as exc:
        raise InvalidArgumentError(
            f"cursor: not a cursor returned by list_{kind} with order={order!r} ({exc})"
        ) from None
    return created_at, row_id


# -- listings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing(Generic[ReadT]):
    kind: str
    table: Table
    json_columns: dict[str, str]
    to_item: Callable[[Any], ReadT]


_RUN_LISTING: Final = _Listing("runs", RUNS, RUN_JSON_COLUMNS, run_read)
_PROMPT_LISTING: Final = _Listing(
    "prompts",
    PROMPTS,
    PROMPT_JSON_COLUMNS,
    lambda row: PromptRead.model_validate(dict(row._mapping)),
)


def _page(
    db: DatabaseConnection,
    listing: _Listing[ReadT],
    conditions: list[ColumnElement[bool]],
    *,
    window: tuple[datetime | None, datetime | None],
    json_filters: Sequence[JsonFilter],
    order: Order,
    limit: int,
    cursor: str | None,
) -> Page[ReadT]:
    """Run one keyset-paginated listing: ``conditions`` plus the filters every listing has."""
    check_connection(db)
    check_limit(limit)
    if order not in ("newest", "oldest"):
        raise InvalidArgumentError(f"order: must be 'newest' or 'oldest', got {order!r}")
    table = listing.table
    created, row_id = table.c.created_at, table.c.id
    created_after, created_before = window
    if created_after is not None:
        conditions.append(created >= resolve_now(created_after, "created_after"))
    if created_before is not None:
        conditions.append(created < resolve_now(created_before, "created_before"))
    for condition in check_iterable(json_filters, "json_filters", "JsonFilter objects"):
        if not isinstance(condition, JsonFilter):
            raise InvalidArgumentError(
                f"json_filters: expected JsonFilter objects, got {condition!r}"
            )
        conditions.append(
            json_condition(table, listing.json_columns, condition, db.engine.dialect.name)
        )
    if cursor is not None:
        after_time, after_id = decode_cursor(cursor, listing.kind, order)
        if order == "newest":
            keyset = or_(created < after_time, and_(created == after_time, row_id < after_id))
        else:
            keyset = or_(created > after_time, and_(created == after_time, row_id > after_id))
        conditions.append(keyset)
    ordering = (created.desc(), row_id.desc()) if order == "newest" else (created, row_id)
    # One row more than asked tells whether another page exists, without a COUNT.
    query: Select[Any] = select(table).where(*conditions).order_by(*ordering).limit(limit + 1)
    with db.get_session(read_only=True) as session:
        rows = session.execute(query).all()
    items = [listing.to_item(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(listing.kind, order, last.created_at, last.id)
    return Page[ReadT](items=items, next_cursor=next_cursor)


def list_runs(
    db: DatabaseConnection,
    *,
    status: RunStatus | str | Collection[RunStatus | str] | None = None,
    model_type: str | None = None,
    prompt_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    json_filters: Sequence[JsonFilter] = (),
    order: Order = "newest",
    limit: int = 50,
    cursor: str | None = None,
) -> Page[RunRead]:
    """Return one page of runs matching every filter given, newest first by default.

    ``status`` is one status or several; ``created_after`` is inclusive and ``created_before``
    exclusive; ``json_filters`` apply to ``execution_config``, ``outputs`` and ``run_metadata``.
    Raises ``ValueError`` naming the argument: an unknown status, a naive datetime, a bad
    ``limit`` (1 to 1000), an invalid ``cursor`` or JSON filter.
    """
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(RUNS.c.status.in_(check_statuses(status, "status")))
    if model_type is not None:
        conditions.append(RUNS.c.model_type == check_str(model_type, "model_type"))
    if prompt_id is not None:
        conditions.append(RUNS.c.prompt_id == check_str(prompt_id, "prompt_id"))
    return _page(
        db,
        _RUN_LISTING,
        conditions,
        window=(created_after, created_before),
        json_filters=json_filters,
        order=order,
        limit=limit,
        cursor=cursor,
    )


def list_prompts(
    db: DatabaseConnection,
    *,
    model_type: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    json_filters: Sequence[JsonFilter] = (),
    order: Order = "newest",
    limit: int = 50,
    cursor: str | None = None,
) -> Page[PromptRead]:
    """Return one page of prompts matching every filter given, newest first by default.

    ``json_filters`` apply to ``inputs`` and ``parameters``. Raises ``ValueError`` naming the
    argument, as ``list_runs`` does.
    """
    conditions: list[ColumnElement[bool]] = []
    if model_type is not None:
        conditions.append(PROMPTS.c.model_type == check_str(model_type, "model_type"))
    return _page(
        db,
        _PROMPT_LISTING,
        conditions,
        window=(created_after, created_before),
        json_filters=json_filters,
        order=order,
        limit=limit,
        cursor=cursor,
    )
