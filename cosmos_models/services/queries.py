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
from sqlalchemy import ColumnElement, Integer, Select, Table, and_, bindparam, or_, select

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.json_filters import JsonFilter, json_condition
from cosmos_models.db.lean import LeanSelect
from cosmos_models.db.tables import PROMPTS, RUNS
from cosmos_models.errors import InvalidArgumentError, PromptNotFoundError, RunNotFoundError
from cosmos_models.models.checks import check_iterable, check_statuses, check_str
from cosmos_models.models.progress import ProgressRead
from cosmos_models.models.prompt import PromptRead
from cosmos_models.models.readmodels import (
    RUN_COLUMN_OF,
    Page,
    PromptSummary,
    RunDetail,
    row_reader,
    run_read,
    run_reader,
    trusted,
)
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import RunStatus
from cosmos_models.services.common import check_connection, check_limit, resolve_now

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


_GET_RUN: Final = LeanSelect(select(RUNS).where(RUNS.c.id == bindparam("run_id")))
_GET_PROMPT: Final = LeanSelect(select(PROMPTS).where(PROMPTS.c.id == bindparam("prompt_id")))


def get_run(db: DatabaseConnection, run_id: str) -> RunRead:
    """Return one run. Raises ``RunNotFoundError``, ``InvalidArgumentError`` naming a bad
    ``run_id``."""
    check_connection(db)
    found = _GET_RUN.models(db, {"run_id": check_str(run_id, "run_id")}, RunRead, RUN_COLUMN_OF)
    if not found:
        raise RunNotFoundError(run_id)
    return found[0]


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
    # The run's summary, read with it in the same row: one query, one snapshot.
    latest = None
    if row.latest_seq > 0:
        latest = trusted(
            ProgressRead,
            {
                "id": row.latest_progress_id,
                "run_id": run.id,
                "seq": row.latest_seq,
                "stage": row.latest_stage,
                "percentage": row.latest_percentage,
                "message": row.latest_message,
                "timestamp": row.latest_at,
            },
        )
    return RunDetail(**run.model_dump(), prompt=prompt, latest_progress=latest)


def get_prompt(db: DatabaseConnection, prompt_id: str) -> PromptRead:
    """Return one prompt. Raises ``PromptNotFoundError``, ``InvalidArgumentError``."""
    check_connection(db)
    found = _GET_PROMPT.models(db, {"prompt_id": check_str(prompt_id, "prompt_id")}, PromptRead)
    if not found:
        raise PromptNotFoundError(prompt_id)
    return found[0]


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
        # A forged id must be one every backend can bind: no NUL (PostgreSQL refuses it), no
        # lone surrogate (not UTF-8), as any id given as an argument.
        row_id = check_str(document["i"], "id")
    except (
        binascii.Error,
        UnicodeError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,  # [[[[…]]]]: json.loads recurses once per level
    ) as exc:
        # Our own findings are named; a decoder's message (Python internals) is not echoed.
        reason = f" ({exc})" if isinstance(exc, InvalidArgumentError) else ""
        raise InvalidArgumentError(
            f"cursor: not a cursor returned by list_{kind} with order={order!r}{reason}"
        ) from None
    return created_at, row_id


# -- listings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Listing(Generic[ReadT]):
    kind: str
    table: Table
    json_columns: dict[str, str]
    model: type[ReadT]
    column_of: dict[str, str]  # the table's column of a field, where the two names differ
    to_item: Callable[[Sequence[Any]], ReadT]  # from a Core row of select(table), by position


_RUN_LISTING: Final = _Listing(
    "runs",
    RUNS,
    RUN_JSON_COLUMNS,
    RunRead,
    RUN_COLUMN_OF,
    run_reader([c.key for c in RUNS.columns]),
)
_PROMPT_LISTING: Final = _Listing(
    "prompts",
    PROMPTS,
    PROMPT_JSON_COLUMNS,
    PromptRead,
    {},
    row_reader(PromptRead, [c.key for c in PROMPTS.columns]),
)

# A listing's own filters, in a fixed order: (name, (column, value)); a list value means "one of".
Filters = list[tuple[str, tuple[Any, Any]]]
# Statements of listings without JSON filters, by shape (which filters, how many statuses,
# order, cursor or not): built and compiled once each. Few shapes exist (a few hundred at most).
_LEAN_PAGES: dict[tuple[Any, ...], LeanSelect] = {}


def _page(
    db: DatabaseConnection,
    listing: _Listing[ReadT],
    filters: Filters,
    *,
    window: tuple[datetime | None, datetime | None],
    json_filters: Sequence[JsonFilter],
    order: Order,
    limit: int,
    cursor: str | None,
) -> Page[ReadT]:
    """Run one keyset-paginated listing: ``filters`` plus the filters every listing has."""
    check_connection(db)
    check_limit(limit)
    if order not in ("newest", "oldest"):
        raise InvalidArgumentError(f"order: must be 'newest' or 'oldest', got {order!r}")
    created_after, created_before = window
    values: dict[str, Any] = {}
    for name, (_, value) in filters:
        if isinstance(value, list):
            values.update((f"{name}_{index}", item) for index, item in enumerate(value))
        else:
            values[name] = value
    if created_after is not None:
        values["created_after"] = resolve_now(created_after, "created_after")
    if created_before is not None:
        values["created_before"] = resolve_now(created_before, "created_before")
    json_conditions = [
        json_condition(listing.table, listing.json_columns, condition, db.engine.dialect.name)
        for condition in _checked_json_filters(json_filters)
    ]
    if cursor is not None:
        values["after_time"], values["after_id"] = decode_cursor(cursor, listing.kind, order)
    # One row more than asked tells whether another page exists, without a COUNT.
    values["limit"] = limit + 1
    shape = (listing.kind, tuple(name for name, _ in filters), tuple(sorted(values)), order)
    if json_conditions:  # their SQL holds their values: built and executed per call
        query = _listing_query(listing, filters, values, order).where(*json_conditions)
        with db.get_session(read_only=True) as session:
            rows = session.execute(query, values).all()
        items = [listing.to_item(row) for row in rows]
    else:
        lean = _LEAN_PAGES.get(shape)
        if lean is None:
            lean = _LEAN_PAGES[shape] = LeanSelect(_listing_query(listing, filters, values, order))
        items = lean.models(db, values, listing.model, listing.column_of)
    next_cursor = None
    if len(items) > limit:
        del items[limit:]
        last = items[-1]
        created_at: datetime = last.created_at  # type: ignore[attr-defined]
        row_id: str = last.id  # type: ignore[attr-defined]
        next_cursor = encode_cursor(listing.kind, order, created_at, row_id)
    return Page[ReadT](items=items, next_cursor=next_cursor)


def _checked_json_filters(json_filters: Sequence[JsonFilter]) -> list[JsonFilter]:
    checked = list(check_iterable(json_filters, "json_filters", "JsonFilter objects"))
    for condition in checked:
        if not isinstance(condition, JsonFilter):
            raise InvalidArgumentError(
                f"json_filters: expected JsonFilter objects, got {condition!r}"
            )
    return checked


def _listing_query(
    listing: _Listing[ReadT], filters: Filters, values: dict[str, Any], order: Order
) -> Select[Any]:
    """The listing's statement, its values as named parameters (``values`` gives the names)."""
    table = listing.table
    created, row_id = table.c.created_at, table.c.id
    conditions: list[ColumnElement[bool]] = []
    for name, (column, value) in filters:
        if isinstance(value, list):  # one of several: one parameter each, numbered
            names = [f"{name}_{index}" for index in range(len(value))]
            conditions.append(column.in_([bindparam(n, type_=column.type) for n in names]))
        else:
            conditions.append(column == bindparam(name, type_=column.type))
    if "created_after" in values:
        conditions.append(created >= bindparam("created_after", type_=created.type))
    if "created_before" in values:
        conditions.append(created < bindparam("created_before", type_=created.type))
    if "after_id" in values:
        after_time = bindparam("after_time", type_=created.type)
        after_id = bindparam("after_id", type_=row_id.type)
        if order == "newest":
            keyset = or_(created < after_time, and_(created == after_time, row_id < after_id))
        else:
            keyset = or_(created > after_time, and_(created == after_time, row_id > after_id))
        conditions.append(keyset)
    ordering = (created.desc(), row_id.desc()) if order == "newest" else (created, row_id)
    return (
        select(table)
        .where(*conditions)
        .order_by(*ordering)
        .limit(bindparam("limit", type_=Integer()))
    )


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
    filters: Filters = []
    if status is not None:
        statuses = check_statuses(status, "status")
        filters.append(("status", (RUNS.c.status, statuses)))
    if model_type is not None:
        filters.append(("model_type", (RUNS.c.model_type, check_str(model_type, "model_type"))))
    if prompt_id is not None:
        filters.append(("prompt_id", (RUNS.c.prompt_id, check_str(prompt_id, "prompt_id"))))
    return _page(
        db,
        _RUN_LISTING,
        filters,
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
    filters: Filters = []
    if model_type is not None:
        filters.append(("model_type", (PROMPTS.c.model_type, check_str(model_type, "model_type"))))
    return _page(
        db,
        _PROMPT_LISTING,
        filters,
        window=(created_after, created_before),
        json_filters=json_filters,
        order=order,
        limit=limit,
        cursor=cursor,
    )
