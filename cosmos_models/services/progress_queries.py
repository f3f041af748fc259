"""Reading progress: each run's latest event from its summary, and a run's events by seq."""

from collections.abc import Callable, Iterable
from typing import Any, Final

from sqlalchemy import Dialect, Integer, Select, String, any_, bindparam, select
from sqlalchemy.dialects import postgresql

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.lean import LeanSelect, dialect_key, fetch
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.errors import RunNotFoundError
from cosmos_models.models.checks import MAX_SEQ, check_int, check_str, check_str_iterable
from cosmos_models.models.progress import ProgressRead
from cosmos_models.models.types import lean_result_processor
from cosmos_models.services.common import check_connection, check_limit


def latest_progress(db: DatabaseConnection, run_ids: Iterable[str]) -> dict[str, ProgressRead]:
    """Return the latest event of each run: its greatest ``seq`` (the last one committed).

    That is the last event written, which differs from the event with the greatest timestamp
    if a writer sent an older timestamp later. Read from the run's summary (kept on write) by
    primary key, the event's id included: no progress row or index is read.
    Runs without events, and unknown run ids, are absent from the result. Raises
    ``DatabaseError``.
    """
    check_connection(db)
    wanted = sorted(set(check_str_iterable(run_ids, "run_ids")))
    if not wanted:
        return {}
    dialect = db.engine.dialect
    sql, parameters = _latest_progress_sql(wanted, dialect.name)
    # The driver's cursor: for 1,000 runs, SQLAlchemy's row and type processing cost more than
    # the query. The SQL is latest_progress_query's, written for each driver's paramstyle; the
    # timestamps go through their column type's own result processor, nothing else needs one.
    # Rows in binary on psycopg: it loads integers, floats and timestamps from their binary
    # form in C, a quarter of the driver's CPU time for this query (text parses them).
    # SQLAlchemy's adapter of the async driver takes no such option.
    binary = dialect.driver == "psycopg" and not dialect.is_async
    rows, _ = fetch(db, sql, parameters, options={"binary": True} if binary else None)
    stamp = _timestamp_processor(dialect)
    # trusted() unrolled: this loop runs once per run asked, 1,000 times per dashboard refresh.
    latest: dict[str, ProgressRead] = {}
    for event_id, run_id, seq, stage, percentage, message, at in rows:
        read = _new(ProgressRead)
        _set(
            read,
            "__dict__",
            {
                "id": event_id,
                "run_id": run_id,
                "seq": seq,
                "stage": stage,
                "percentage": percentage,
                "message": message,
                "timestamp": at if stamp is None else stamp(at),
            },
        )
        _set(read, "__pydantic_fields_set__", _PROGRESS_FIELDS)
        _set(read, "__pydantic_extra__", None)
        _set(read, "__pydantic_private__", None)
        latest[run_id] = read
    return latest


_new: Final = object.__new__
_set: Final = object.__setattr__
_PROGRESS_FIELDS: Final = frozenset(ProgressRead.model_fields)


_LATEST_COLUMNS: Final = (
    "latest_progress_id, id, latest_seq, latest_stage, latest_percentage, latest_message, latest_at"
)


def _latest_progress_sql(run_ids: list[str], dialect: str) -> tuple[str, Any]:
    """latest_progress_query as driver SQL and parameters."""
    if dialect == "postgresql":
        where = "id = ANY(%s::VARCHAR[])"
        # The array's text form, not a list: psycopg dumps a list element by element in Python
        # (1.3-1.7 ms of CPU for 1,000 ids, about what the server spends on the lookups).
        parameters: Any = (_array_literal(run_ids),)
    else:
        mark = "?" if dialect == "sqlite" else "%s"
        where = f"id IN ({', '.join([mark] * len(run_ids))})"
        parameters = tuple(run_ids)
    return f"SELECT {_LATEST_COLUMNS} FROM runs WHERE {where} AND latest_seq > 0", parameters


def _array_literal(values: list[str]) -> str:
    """PostgreSQL's text form of an array of these strings (``array_in`` reads it back exactly).

    Every element is quoted, so commas, braces, spaces and ``NULL`` stay data; inside quotes
    only ``"`` and ``\\`` need a backslash. Strings hold no NUL (check_str refuses it).
    """
    plain = "".join(values)  # one C-level pass tells whether any element needs escaping
    if '"' in plain or "\\" in plain:
        values = [value.replace("\\", "\\\\").replace('"', '\\"') for value in values]
    return '{"' + '","'.join(values) + '"}'


def _timestamp_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    """The result processor of the summary's timestamp column (aware UTC out of any driver)."""
    key = dialect_key(dialect)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = lean_result_processor(RUNS.c.latest_at.type, dialect, None)
    return _PROCESSORS[key]


_PROCESSORS: dict[tuple[Any, ...], Callable[[Any], Any] | None] = {}


def latest_progress_query(run_ids: list[str], dialect: str = "sqlite") -> Select[Any]:
    """The one statement behind ``latest_progress`` (public so that its plan can be checked).

    One primary-key lookup in ``runs`` per asked id: the summary holds the latest event's
    fields and id, so no progress row or index is read. Columns come in the order
    ``latest_progress`` maps them.
    """
    if dialect == "postgresql":
        # One array parameter, not one parameter per id: 1,000 binds cost more than the query.
        wanted = RUNS.c.id == any_(bindparam("run_ids", run_ids, type_=postgresql.ARRAY(String)))
    else:
        wanted = RUNS.c.id.in_(run_ids)
    return select(
        RUNS.c.latest_progress_id,
        RUNS.c.id,
        RUNS.c.latest_seq,
        RUNS.c.latest_stage,
        RUNS.c.latest_percentage,
        RUNS.c.latest_message,
        RUNS.c.latest_at,
    ).where(wanted, RUNS.c.latest_seq > 0)


def progress_since(
    db: DatabaseConnection, run_id: str, after: int = 0, limit: int = 100
) -> list[ProgressRead]:
    """Return a run's events with ``seq > after``, in seq order, at most ``limit`` of them.

    For polling: pass the last seq seen. Seqs are numbered in commit order without gaps, so a
    poller never passes an event that commits later. Raises ``ValueError`` naming ``after`` or
    ``limit``, ``RunNotFoundError`` for an unknown run.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    check_int(after, "after", 0)
    check_limit(limit)
    # Past the largest seq a run can have: nothing (PostgreSQL refuses a bigger integer here).
    values = {"run_id": run_id, "after": min(after, MAX_SEQ), "limit": limit}
    events = _SINCE.models(db, values, ProgressRead)
    if not events and not _RUN_EXISTS.rows(db, {"run_id": run_id}):
        raise RunNotFoundError(run_id)
    return events


_SINCE: Final = LeanSelect(
    select(PROGRESS)
    .where(PROGRESS.c.run_id == bindparam("run_id"), PROGRESS.c.seq > bindparam("after"))
    .order_by(PROGRESS.c.seq)
    .limit(bindparam("limit", type_=Integer()))
)
_RUN_EXISTS: Final = LeanSelect(select(RUNS.c.id).where(RUNS.c.id == bindparam("run_id")))
