"""Reading progress: each run's latest event from its summary, and a run's events by seq."""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    Select,
    String,
    any_,
    bindparam,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.errors import RunNotFoundError
from cosmos_models.models.checks import MAX_SEQ, check_int, check_str, check_str_iterable
from cosmos_models.models.progress import ProgressRead
from cosmos_models.models.readmodels import progress_read, progress_with
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
    with db.get_session(read_only=True) as session:
        connection = session.connection()
        dialect = connection.dialect
        sql, parameters = _latest_progress_sql(wanted, dialect.name)
        # The driver's cursor on the session's connection (same transaction, same error
        # translation): for 1,000 runs, SQLAlchemy's row and type processing cost more than
        # the query. The SQL is latest_progress_query's, written for each driver's paramstyle.
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, parameters)
            rows = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(sql, parameters, exc, dialect.loaded_dbapi.Error) from exc
        finally:
            cursor.close()
    to_utc = _UTC_READERS[dialect.name]
    return {
        row[1]: progress_with(
            {
                "id": row[0],
                "run_id": row[1],
                "seq": row[2],
                "stage": row[3],
                "percentage": row[4],
                "message": row[5],
                "timestamp": to_utc(row[6]),
            }
        )
        for row in rows
    }


_LATEST_COLUMNS: Final = (
    "latest_progress_id, id, latest_seq, latest_stage, latest_percentage, latest_message, latest_at"
)


def _latest_progress_sql(run_ids: list[str], dialect: str) -> tuple[str, Any]:
    """latest_progress_query as driver SQL and parameters."""
    if dialect == "postgresql":
        where = "id = ANY(%s::VARCHAR[])"
        parameters: Any = (run_ids,)
    else:
        mark = "?" if dialect == "sqlite" else "%s"
        where = f"id IN ({', '.join([mark] * len(run_ids))})"
        parameters = tuple(run_ids)
    return f"SELECT {_LATEST_COLUMNS} FROM runs WHERE {where} AND latest_seq > 0", parameters


def _sqlite_utc(value: str | None) -> datetime | None:
    # UTCDateTime's storage text: naive UTC wall time.
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _mysql_utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _postgresql_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


_UTC_READERS: Final[dict[str, Callable[[Any], datetime | None]]] = {
    "sqlite": _sqlite_utc,
    "mysql": _mysql_utc,
    "mariadb": _mysql_utc,
    "postgresql": _postgresql_utc,
}


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
    with db.get_session(read_only=True) as session:
        rows = session.execute(
            select(PROGRESS)
            .where(PROGRESS.c.run_id == run_id, PROGRESS.c.seq > min(after, MAX_SEQ))
            .order_by(PROGRESS.c.seq)
            .limit(limit)
        ).all()
        if (
            not rows
            and session.execute(select(RUNS.c.id).where(RUNS.c.id == run_id)).scalar() is None
        ):
            raise RunNotFoundError(run_id)
    return [progress_read(row) for row in rows]
