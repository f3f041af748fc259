"""Recording and reading progress events: the write path of workers, the read path of dashboards.

``record_progress_batch`` is the fast path: events are validated into plain dicts by one
pydantic-core call (no model or ORM objects, no identity map), the target runs are checked in one
query, and all rows go in with one Core ``executemany``, inside one transaction.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Final, NotRequired, cast

from pydantic import TypeAdapter
from sqlalchemy import Connection, Row, Select, String, bindparam, func, insert, select, true
from sqlalchemy.dialects import postgresql
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from cosmos_models.arguments import (
    check_connection,
    check_int,
    check_iterable,
    check_str,
    check_str_iterable,
)
from cosmos_models.connection import DatabaseConnection
from cosmos_models.errors import RunFinishedError, RunNotFoundError
from cosmos_models.progress import ProgressCreate, ProgressRead
from cosmos_models.run import RunStatus
from cosmos_models.tables import PROGRESS, RUNS
from cosmos_models.types import utcnow

MAX_PAGE: Final = 1000


def _event_dict_type() -> Any:
    """A ``TypedDict`` with ProgressCreate's fields and rules, derived so the two never drift.

    Validating into plain dicts skips building a model object per event (SQLModel's ``__init__``
    path is about five times slower than pydantic-core filling a dict).
    """
    fields: dict[str, Any] = {}
    for name, info in ProgressCreate.model_fields.items():
        annotation = (
            Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
        fields[name] = annotation if info.is_required() else NotRequired[annotation]
    return TypedDict("ProgressEvent", fields)  # type: ignore[operator]


# One validator call for a whole batch: pydantic-core walks the list without Python loops.
_ProgressEvent: Any = _event_dict_type()
_events_adapter: Final[TypeAdapter[list[dict[str, Any]]]] = TypeAdapter(list[_ProgressEvent])


def _rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill the defaults ``executemany`` needs; one clock reading stamps events without a time."""
    now = utcnow()
    for event in events:
        event.setdefault("message", "")
        if event.get("timestamp") is None:
            event["timestamp"] = now
    return events


# Built once: statement construction costs more than the query itself for small batches.
_RUN_STATUSES: Final = (
    select(RUNS.c.id, RUNS.c.status)
    .where(RUNS.c.id.in_(bindparam("run_ids", expanding=True)))
    .with_for_update(read=True)
)
_INSERT_PROGRESS: Final = insert(PROGRESS)


def _check_runs_open(connection: Connection, run_ids: set[str]) -> None:
    """Refuse events for unknown or final runs, checking every run in one query.

    ``FOR SHARE`` (PostgreSQL, MariaDB; nothing on SQLite, whose writers take turns) keeps a
    concurrent transition from finishing a run between this check and the insert.
    """
    found: dict[str, RunStatus] = {
        row.id: row.status
        for row in connection.execute(_RUN_STATUSES, {"run_ids": sorted(run_ids)})
    }
    missing = run_ids - found.keys()
    if missing:
        raise RunNotFoundError(sorted(missing))
    for run_id in sorted(found):
        if found[run_id].is_final:
            raise RunFinishedError(run_id, found[run_id].value)


def record_progress(
    conn: DatabaseConnection,
    run_id: str,
    stage: str,
    percentage: float,
    message: str = "",
    *,
    timestamp: datetime | None = None,
) -> ProgressRead:
    """Record one progress event of a run and return it with its id.

    ``timestamp`` defaults to now (UTC). Raises ``pydantic.ValidationError`` naming the field,
    ``RunNotFoundError`` for an unknown run, ``RunFinishedError`` for a completed, failed or
    cancelled run.
    """
    check_connection(conn)
    event = ProgressCreate(
        run_id=run_id, stage=stage, percentage=percentage, message=message, timestamp=timestamp
    )
    (row,) = _rows([event.model_dump()])
    with conn.get_session() as session:
        connection = session.connection()
        _check_runs_open(connection, {event.run_id})
        result = connection.execute(insert(PROGRESS).values(**row))
        new_id = cast(Row[Any], result.inserted_primary_key)[0]  # one row inserted: never None
    return ProgressRead.model_validate({**row, "id": new_id})


def record_progress_batch(
    conn: DatabaseConnection, events: Iterable[ProgressCreate | Mapping[str, Any]]
) -> int:
    """Record many progress events (of one run or many) all or none; return how many.

    Raises ``pydantic.ValidationError`` naming the event's index and field (nothing is written),
    ``RunNotFoundError`` listing unknown runs, ``RunFinishedError`` for a final run.
    """
    check_connection(conn)
    # ProgressCreate objects join as their field dicts and are checked again with the rest: one
    # path, and an object changed after it was built cannot slip through.
    items = [
        item.__dict__ if isinstance(item, ProgressCreate) else item
        for item in check_iterable(events, "events", "events")
    ]
    if not items:
        return 0
    rows = _rows(_events_adapter.validate_python(items))
    with conn.get_session() as session:
        # Core on the session's connection: the ORM layer has nothing to add to these statements.
        connection = session.connection()
        _check_runs_open(connection, {row["run_id"] for row in rows})
        connection.execute(_INSERT_PROGRESS, rows)
    return len(rows)


def progress_read(row: Row[Any]) -> ProgressRead:
    """A stored progress row as its read model, without validating it again.

    The row comes from typed columns (aware UTC timestamps, finite percentages checked on the way
    in and by the CHECK constraint): validating each one again cost most of a 1,000-run
    ``latest_progress`` call.
    """
    return ProgressRead.model_construct(**row._mapping)


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` naming ``limit`` unless it is an integer from 1 to ``MAX_PAGE``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit: must be an integer from 1 to {MAX_PAGE}, got {limit!r}")


def latest_progress(conn: DatabaseConnection, run_ids: Iterable[str]) -> dict[str, ProgressRead]:
    """Return the latest event (greatest ``timestamp``, then ``id``) of each run, in one query.

    Runs without events, and unknown run ids, are absent from the result. For each run the
    database reads one entry from the end of ``ix_progress_run_id_timestamp_id``, so the cost
    grows with the number of runs asked for, not with the size of the progress table.
    Raises ``DatabaseError``.
    """
    check_connection(conn)
    wanted = sorted(set(check_str_iterable(run_ids, "run_ids")))
    if not wanted:
        return {}
    with conn.get_session(read_only=True) as session:
        statement = latest_progress_query(wanted, session.get_bind().dialect.name)
        rows = session.execute(statement).all()
    return {row.run_id: progress_read(row) for row in rows}


def latest_progress_query(run_ids: list[str], dialect: str = "sqlite") -> Select[Any]:
    """The one statement behind ``latest_progress`` (public so that its plan can be checked).

    PostgreSQL takes one LATERAL probe per asked id straight to the newest row; SQLite and
    MariaDB (no LATERAL) look up each run's newest id in a correlated subquery, then the row.
    """
    newest_first = (PROGRESS.c.timestamp.desc(), PROGRESS.c.id.desc())
    if dialect == "postgresql":
        # One array parameter, not one parameter per id: 1,000 binds cost more than the query.
        ids = bindparam("run_ids", run_ids, type_=postgresql.ARRAY(String))
        wanted = func.unnest(ids).table_valued("run_id").render_derived("wanted")
        newest = (
            select(PROGRESS)
            .where(PROGRESS.c.run_id == wanted.c.run_id)
            .order_by(*newest_first)
            .limit(1)
            .lateral("newest")
        )
        return select(newest).select_from(wanted).join(newest, true())
    latest_id = (
        select(PROGRESS.c.id)
        .where(PROGRESS.c.run_id == RUNS.c.id)
        .order_by(*newest_first)
        .limit(1)
        .correlate(RUNS)
        .scalar_subquery()
    )
    heads = select(latest_id.label("progress_id")).where(RUNS.c.id.in_(run_ids)).subquery("heads")
    return select(PROGRESS).join(heads, PROGRESS.c.id == heads.c.progress_id)


def progress_since(
    conn: DatabaseConnection, run_id: str, after_id: int = 0, limit: int = 100
) -> list[ProgressRead]:
    """Return a run's events with ``id > after_id``, oldest first, at most ``limit`` of them.

    For dashboard polling: pass the last id seen. Raises ``ValueError`` naming ``after_id`` or
    ``limit``, ``RunNotFoundError`` for an unknown run.
    """
    check_connection(conn)
    check_str(run_id, "run_id")
    check_int(after_id, "after_id", 0)
    check_limit(limit)
    with conn.get_session(read_only=True) as session:
        rows = session.execute(
            select(PROGRESS)
            .where(PROGRESS.c.run_id == run_id, PROGRESS.c.id > after_id)
            .order_by(PROGRESS.c.id)
            .limit(limit)
        ).all()
        if (
            not rows
            and session.execute(select(RUNS.c.id).where(RUNS.c.id == run_id)).scalar() is None
        ):
            raise RunNotFoundError(run_id)
    return [progress_read(row) for row in rows]
