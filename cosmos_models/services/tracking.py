"""Recording and reading progress events: the write path of workers, the read path of dashboards.

``record_progress_batch`` is the fast path: events are validated into plain dicts by one
pydantic-core call (no model or ORM objects, no identity map), each target run's row is updated
once (numbering its events and keeping its progress summary), and all rows go in with one driver
``executemany`` (``COPY`` for large batches on PostgreSQL; services/ingest.py), inside one
transaction.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Final, NoReturn, NotRequired, cast

from pydantic import Field, TypeAdapter
from sqlalchemy import (
    Connection,
    CursorResult,
    Row,
    Update,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import event as orm_events
from sqlalchemy.orm.attributes import set_committed_value
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.errors import RunFinishedError, RunNotFoundError
from cosmos_models.models.checks import check_iterable
from cosmos_models.models.progress import Progress, ProgressCreate, ProgressRead
from cosmos_models.models.readmodels import progress_from
from cosmos_models.models.status import FINAL_STATUSES, RunStatus
from cosmos_models.models.types import utcnow
from cosmos_models.services.common import NOTIFY_CHANNEL, check_connection
from cosmos_models.services.ingest import insert_rows


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
        # Defaults filled by pydantic-core too (message "", timestamp None), not by a loop.
        fields[name] = (
            annotation
            if info.is_required()
            else Annotated[NotRequired[annotation], Field(default=info.default)]
        )
    return TypedDict("ProgressEvent", fields)  # type: ignore[operator]


# One validator call for a whole batch: pydantic-core walks the list without Python loops.
_ProgressEvent: Any = _event_dict_type()
_events_adapter: Final[TypeAdapter[list[dict[str, Any]]]] = TypeAdapter(list[_ProgressEvent])


def _rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stamp the events given without a time, all with one clock reading."""
    now = utcnow()
    for event in events:
        if event["timestamp"] is None:
            event["timestamp"] = now
    return events


# Built once: statement construction costs more than the query itself for small batches.
_FINAL_VALUES: Final = sorted(status.value for status in FINAL_STATUSES)


def _advance_statement(*, open_runs_only: bool) -> Update:
    """Number a run's next ``n`` events and keep its summary: one UPDATE of the run row.

    Updating the run row first takes its row lock (SQLite: the write lock of BEGIN IMMEDIATE),
    so writers of one run take turns and each numbers its events after the previous writer's
    commit: per run, seq order is commit order, without gaps. ``updated_at`` is left as it is:
    progress is not a change of the run's record.
    """
    statement = (
        update(RUNS)
        .where(RUNS.c.id == bindparam("target"))
        .values(
            progress_count=RUNS.c.progress_count + bindparam("n"),
            latest_seq=RUNS.c.latest_seq + bindparam("n"),
            latest_stage=bindparam("stage"),
            latest_percentage=bindparam("percentage"),
            latest_message=bindparam("message"),
            latest_at=bindparam("timestamp", type_=RUNS.c.latest_at.type),
            updated_at=RUNS.c.updated_at,
        )
    )
    if open_runs_only:
        statement = statement.where(RUNS.c.status.not_in(_FINAL_VALUES))
    return statement


_ADVANCE_OPEN: Final = _advance_statement(open_runs_only=True)
_ADVANCE_ANY: Final = _advance_statement(open_runs_only=False)
_LATEST_SEQS: Final = select(RUNS.c.id, RUNS.c.latest_seq).where(
    RUNS.c.id.in_(bindparam("run_ids", expanding=True))
)
_RUN_STATUSES: Final = select(RUNS.c.id, RUNS.c.status).where(
    RUNS.c.id.in_(bindparam("run_ids", expanding=True))
)
_INSERT_PROGRESS: Final = insert(PROGRESS)
# The summary points at its event, so that latest_progress reads runs alone. Looked up by the
# unique (run_id, seq) after the insert: the writer needs no ids back (INSERT … RETURNING of a
# whole batch halved its speed), and one statement serves every run of the batch.
_LINK_LATEST: Final = (
    update(RUNS)
    .where(RUNS.c.id.in_(bindparam("run_ids", expanding=True)))
    .values(
        latest_progress_id=select(PROGRESS.c.id)
        .where(PROGRESS.c.run_id == RUNS.c.id, PROGRESS.c.seq == RUNS.c.latest_seq)
        .scalar_subquery(),
        updated_at=RUNS.c.updated_at,
    )
)


def link_latest(connection: Connection, run_ids: Iterable[str]) -> None:
    """Point the summary of each run at its newest event, once the events are inserted."""
    connection.execute(_LINK_LATEST, {"run_ids": sorted(set(run_ids))})


# NOTIFY is delivered at commit, and not at all on rollback: followers wake for committed events.
_NOTIFY: Final = text(
    f"SELECT pg_notify('{NOTIFY_CHANNEL}', run_id) FROM unnest(CAST(:run_ids AS text[])) run_id"
)


def _refuse(connection: Connection, run_ids: list[str]) -> NoReturn:
    """Raise for the unknown or final runs among ``run_ids`` (some UPDATE matched nothing)."""
    found: dict[str, RunStatus] = {
        row.id: row.status for row in connection.execute(_RUN_STATUSES, {"run_ids": run_ids})
    }
    missing = sorted(set(run_ids) - found.keys())
    if missing:
        raise RunNotFoundError(missing)
    final = next(run_id for run_id in run_ids if found[run_id].is_final)
    raise RunFinishedError(final, found[final].value)


def number_events(
    connection: Connection, rows: list[dict[str, Any]], *, open_runs_only: bool = True
) -> list[str]:
    """Give each row its ``seq`` and update its run's summary; return the runs' ids, sorted.

    In the caller's transaction. One UPDATE per run (in sorted id order, so two batches over
    the same runs cannot deadlock), then the new counters in one SELECT; a run's rows are
    numbered in the order given. Raises
    ``RunNotFoundError`` listing unknown runs, ``RunFinishedError`` for a final run (with
    ``open_runs_only``); the caller's transaction must then roll back.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    targets = {row["run_id"] for row in rows}
    if len(targets) == 1:  # the usual batch: one worker's events of its run, no regrouping
        by_run[targets.pop()] = rows
    else:
        for row in rows:
            by_run.setdefault(row["run_id"], []).append(row)
    run_ids = sorted(by_run)
    advance = _ADVANCE_OPEN if open_runs_only else _ADVANCE_ANY
    matched = 0
    for run_id in run_ids:
        events = by_run[run_id]
        last = events[-1]
        result = cast(
            CursorResult[Any],
            connection.execute(
                advance,
                {
                    "target": run_id,
                    "n": len(events),
                    "stage": last["stage"],
                    "percentage": last["percentage"],
                    "message": last["message"],
                    "timestamp": last["timestamp"],
                },
            ),
        )
        matched += result.rowcount
    if matched != len(run_ids):
        _refuse(connection, run_ids)
    # Read under the row locks just taken, so no other writer can have moved the counters.
    for run_id, latest in connection.execute(_LATEST_SEQS, {"run_ids": run_ids}):
        events = by_run[run_id]
        first = latest - len(events) + 1
        for offset, event in enumerate(events):
            event["seq"] = first + offset
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY, {"run_ids": run_ids})
    return run_ids


def record_progress(
    db: DatabaseConnection,
    run_id: str,
    stage: str,
    percentage: float,
    message: str = "",
    *,
    timestamp: datetime | None = None,
) -> ProgressRead:
    """Record one progress event of a run and return it with its id and seq.

    ``timestamp`` defaults to now (UTC). Raises ``pydantic.ValidationError`` naming the field,
    ``RunNotFoundError`` for an unknown run, ``RunFinishedError`` for a completed, failed or
    cancelled run.
    """
    check_connection(db)
    event = ProgressCreate(
        run_id=run_id, stage=stage, percentage=percentage, message=message, timestamp=timestamp
    )
    (row,) = _rows([event.model_dump()])
    with db.get_session() as session:
        connection = session.connection()
        number_events(connection, [row])
        result = connection.execute(_INSERT_PROGRESS, row)
        new_id = cast(Row[Any], result.inserted_primary_key)[0]  # one row inserted: never None
        link_latest(connection, [event.run_id])
    return progress_from({**row, "id": new_id})


def record_progress_batch(
    db: DatabaseConnection, events: Iterable[ProgressCreate | Mapping[str, Any]]
) -> int:
    """Record many progress events (of one run or many) all or none; return how many.

    Raises ``pydantic.ValidationError`` naming the event's index and field (nothing is written),
    ``RunNotFoundError`` listing unknown runs, ``RunFinishedError`` for a final run.
    """
    check_connection(db)
    # ProgressCreate objects join as their field dicts and are checked again with the rest: one
    # path, and an object changed after it was built cannot slip through.
    items = [
        item.__dict__ if isinstance(item, ProgressCreate) else item
        for item in check_iterable(events, "events", "events")
    ]
    if not items:
        return 0
    rows = _rows(_events_adapter.validate_python(items))
    with db.get_session() as session:
        # Core on the session's connection: the ORM layer has nothing to add to these statements.
        connection = session.connection()
        run_ids = number_events(connection, rows)
        insert_rows(connection, rows)
        link_latest(connection, run_ids)
    return len(rows)


@orm_events.listens_for(Progress, "before_insert")
def _number_orm_event(_mapper: Any, connection: Connection, target: Progress) -> None:
    """Number a ``Progress`` added through the ORM, as record_progress numbers its events.

    The ORM path stays as permissive as before about final runs (it is the low-level path);
    an unknown run raises ``RunNotFoundError``.
    """
    if target.seq is not None:  # set by the caller (a restore of archived rows)
        return
    row = {
        "run_id": target.run_id,
        "stage": target.stage,
        "percentage": target.percentage,
        "message": target.message,
        "timestamp": target.timestamp,
    }
    number_events(connection, [row], open_runs_only=False)
    # set_committed_value: the seq is server-set, not a change to validate and flush again.
    set_committed_value(target, "seq", row["seq"])


@orm_events.listens_for(Progress, "after_insert")
def _link_orm_event(_mapper: Any, connection: Connection, target: Progress) -> None:
    """Point the run's summary at a ``Progress`` the ORM inserted (now that it has an id)."""
    link_latest(connection, [target.run_id])
