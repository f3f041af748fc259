"""The run lifecycle: creating prompts and runs, moving runs between statuses, and workers.

Every function takes a ``DatabaseConnection`` and owns its transaction (one ``get_session()``,
or one lean unit of work: see ``DatabaseConnection.run_unit``), so each call is all-or-nothing
and callers never juggle sessions. Status changes are
compare-and-set ``UPDATE … WHERE id = :id AND status = :from``: when two writers race, the
database lets exactly one of them match the row, on every backend.

Workers take runs with ``claim_next_run(s)`` (claims.py, oldest pending first), prove they
are alive with ``heartbeat`` and finish with ``transition``; ``reap_stale_runs`` fails the runs
of workers that went silent. ``now=`` lets callers (imports, tests) state the time instead of
reading the clock.
"""

import functools
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final, cast

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Update, bindparam, select, update

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.recovery import Unit
from cosmos_models.db.tables import PROMPTS, RUN_READ_COLUMNS, RUNS
from cosmos_models.errors import (
    InvalidArgumentError,
    InvalidTransitionError,
    PromptNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    TransitionConflictError,
    WorkerMismatchError,
)
from cosmos_models.models.checks import check_status, check_str
from cosmos_models.models.prompt import Prompt, PromptCreate, PromptRead
from cosmos_models.models.readmodels import run_from, run_read
from cosmos_models.models.run import Run, RunCreate, RunRead
from cosmos_models.models.status import (
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    RunStatus,
)
from cosmos_models.models.types import MIN_TIMESTAMP, RequiredText
from cosmos_models.services.common import check_connection, resolve_now, rowcount

# The same rules as the columns these arguments are stored in, applied before any SQL runs.
_REQUIRED_TEXT: Final = TypeAdapter(RequiredText)


def _checked(adapter: TypeAdapter[str], value: str, name: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise InvalidArgumentError(f"{name}: {exc.errors()[0]['msg']}") from None


def _check_model_argument(value: Any, model: type[Any], name: str) -> None:
    if not isinstance(value, model | Mapping):
        raise InvalidArgumentError(
            f"{name}: must be a {model.__name__} or a mapping of its fields, "
            f"got {type(value).__name__}"
        )


# -- creating ----------------------------------------------------------------------------------


def create_prompt(
    db: DatabaseConnection,
    prompt: PromptCreate | Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> PromptRead:
    """Insert a prompt (its id generated when absent) and return it as stored.

    Raises ``pydantic.ValidationError`` for invalid fields, ``IntegrityViolation`` for a
    duplicate id and ``DatabaseError`` for other database errors.
    """
    check_connection(db)
    _check_model_argument(prompt, PromptCreate, "prompt")
    data = PromptCreate.model_validate(prompt)
    update_values = {} if now is None else {"created_at": resolve_now(now)}
    row = Prompt.model_validate(data, update=update_values)
    with db.get_session() as session:
        session.add(row)
    return PromptRead.model_validate(row, from_attributes=True)


def create_run(
    db: DatabaseConnection,
    run: RunCreate | Mapping[str, Any] | str,
    *,
    now: datetime | None = None,
) -> RunRead:
    """Insert a pending run of a prompt (given as ``RunCreate``, a dict or a prompt id).

    The run copies its prompt's ``model_type`` unless one is given. Raises
    ``pydantic.ValidationError`` for invalid fields, ``ValueError`` naming ``status`` for a
    status other than pending (runs move with ``transition``), ``PromptNotFoundError`` for an
    unknown prompt and ``IntegrityViolation`` for a duplicate id.
    """
    check_connection(db)
    if not isinstance(run, str):
        _check_model_argument(run, RunCreate, "run")
    data = RunCreate(prompt_id=run) if isinstance(run, str) else RunCreate.model_validate(run)
    if data.status is not RunStatus.PENDING:
        raise InvalidArgumentError(
            f"status: a new run starts 'pending', not {data.status.value!r}; "
            "move it with transition()"
        )
    moment = resolve_now(now)
    with db.get_session() as session:
        prompt_model_type = session.execute(
            select(PROMPTS.c.model_type).where(PROMPTS.c.id == data.prompt_id)
        ).scalar()
        if prompt_model_type is None:
            raise PromptNotFoundError(data.prompt_id)
        row = Run.model_validate(
            data,
            update={
                "model_type": data.model_type or prompt_model_type,
                "created_at": moment,
                "updated_at": moment,
            },
        )
        session.add(row)
    return run_read(row)


# -- transitions -------------------------------------------------------------------------------


def transition_values(
    source: RunStatus, target: RunStatus, moment: datetime, error_message: str | None
) -> dict[str, Any]:
    """What a move from ``source`` to ``target`` at ``moment`` writes: column name → value."""
    values: dict[str, Any] = {"status": target, "updated_at": moment}
    # A run starts when work begins; one failed or cancelled while still pending never started,
    # so its started_at stays empty and queue-wait statistics are not skewed by it.
    if source is RunStatus.PENDING and not target.is_final:
        values["started_at"] = moment
    if target.is_final:
        values["completed_at"] = moment
    if error_message is not None:
        values["error_message"] = error_message
    return values


# The bind parameter each column a move writes takes its value from (names differ from columns).
_SET_PARAMETER: Final = {
    "status": "t_to",
    "updated_at": "t_now",
    "started_at": "t_now",
    "completed_at": "t_now",
    "error_message": "t_error",
}


@functools.cache
def transition_sets(columns: tuple[str, ...]) -> dict[str, Any]:
    """The SET clause of a move writing ``columns`` (``tuple(transition_values(…))``).

    Each column is given its bind parameter, so that statements are built once per shape.
    """
    return {
        column: bindparam(_SET_PARAMETER[column], type_=RUNS.c[column].type) for column in columns
    }


def transition_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """The bind parameters of ``transition_sets`` for the ``transition_values`` of one move."""
    return {_SET_PARAMETER[column]: value for column, value in values.items()}


def check_error_message(target: RunStatus, error_message: Any) -> None:
    """Raise ``InvalidArgumentError`` naming ``error_message`` unless it is None, or text for a run
    moving to failed or cancelled."""
    if error_message is None:
        return
    if target not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise InvalidArgumentError(
            f"error_message: only a failed or cancelled run records one, not {target.value!r}"
        )
    _checked(_REQUIRED_TEXT, error_message, "error_message")


@functools.cache
def _transition_statement(columns: tuple[str, ...], *, returning: bool) -> Update:
    """The compare-and-set UPDATE of a transition, built once per shape."""
    statement = (
        update(RUNS)
        .where(RUNS.c.id == bindparam("t_id"), RUNS.c.status == bindparam("t_from"))
        .values(transition_sets(columns))
    )
    return statement.returning(*RUN_READ_COLUMNS) if returning else statement


_STATUS_OF: Final = select(RUNS.c.status).where(RUNS.c.id == bindparam("t_id"))
_LOCK_RUN: Final = select(*RUN_READ_COLUMNS).where(RUNS.c.id == bindparam("t_id")).with_for_update()


def _status_of(unit: Unit, run_id: str) -> RunStatus:
    status = unit.read(_STATUS_OF, {"t_id": run_id}).scalar()
    if status is None:
        raise RunNotFoundError(run_id)
    return cast(RunStatus, status)


def _move(
    unit: Unit,
    run_id: str,
    *,
    expected_from: RunStatus | None,
    target: RunStatus,
    moment: datetime,
    error_message: str | None,
) -> RunRead:
    returning = unit.connection.dialect.update_returning
    # Without RETURNING (MariaDB) the run is read whole and locked first; the result is built
    # from that row and what the UPDATE wrote, instead of being read back.
    locked = None
    if not returning:
        locked = unit.read(_LOCK_RUN, {"t_id": run_id}).one_or_none()
        if locked is None:
            raise RunNotFoundError(run_id)
    if expected_from is not None:
        source = expected_from
    else:
        source = locked.status if locked is not None else _status_of(unit, run_id)
    if target not in ALLOWED_TRANSITIONS[source]:
        raise InvalidTransitionError(run_id, source.value, target.value)
    if locked is not None and locked.status != source:
        raise TransitionConflictError(run_id, source.value, locked.status.value, target.value)
    values = transition_values(source, target, moment, error_message)
    statement = _transition_statement(tuple(values), returning=returning)
    parameters = {"t_id": run_id, "t_from": source, **transition_parameters(values)}
    result = unit.write(statement, parameters)
    if locked is not None:
        return run_from({**locked._mapping, **values})
    row = result.one_or_none()
    if row is None:
        current = _status_of(unit, run_id)
        raise TransitionConflictError(run_id, source.value, current.value, target.value)
    return run_read(row)


def transition(
    db: DatabaseConnection,
    run_id: str,
    to: RunStatus | str,
    *,
    error_message: str | None = None,
    expected_from: RunStatus | str | None = None,
    now: datetime | None = None,
) -> RunRead:
    """Move a run to status ``to`` with one atomic compare-and-set UPDATE; return the new row.

    ``expected_from`` states the status the caller believes the run is in (else it is read
    first). ``started_at`` is set when work begins (pending → uploading/running),
    ``completed_at`` on a final status, ``error_message`` (failed or cancelled only) records why.
    The new row comes back from the UPDATE itself (``RETURNING``; on MariaDB from the row read
    and locked before it): with ``expected_from`` a transition is one statement on PostgreSQL.
    Raises ``ValueError`` for an unknown status or a misplaced ``error_message``,
    ``InvalidTransitionError`` if the lifecycle forbids the move, ``TransitionConflictError``
    (carrying ``current``) if another writer moved the run first, ``RunNotFoundError``.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    target = check_status(to, "to")
    source = None if expected_from is None else check_status(expected_from, "expected_from")
    check_error_message(target, error_message)
    moment = resolve_now(now)
    return db.run_unit(
        lambda unit: _move(
            unit,
            run_id,
            expected_from=source,
            target=target,
            moment=moment,
            error_message=error_message,
        )
    )


# -- workers (claims: see claims.py) -----------------------------------------------------------


def heartbeat(
    db: DatabaseConnection, run_id: str, worker_id: str, *, now: datetime | None = None
) -> None:
    """Record that ``worker_id``, which holds run ``run_id``, is alive.

    Raises ``WorkerMismatchError`` if another worker (or none) holds the run,
    ``RunFinishedError`` if the run is already final (cancelled or reaped: the worker should
    stop), ``RunNotFoundError`` for an unknown run.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    check_str(worker_id, "worker_id")
    moment = resolve_now(now)
    with db.get_session() as session:
        matched = rowcount(
            session,
            update(RUNS)
            .where(
                RUNS.c.id == run_id,
                RUNS.c.worker_id == worker_id,
                RUNS.c.status.in_(ACTIVE_STATUSES),
            )
            .values(heartbeat_at=moment, updated_at=moment),
        )
        if matched == 1:
            return
        row = session.execute(
            select(RUNS.c.status, RUNS.c.worker_id).where(RUNS.c.id == run_id)
        ).one_or_none()
        if row is None:
            raise RunNotFoundError(run_id)
        if row.worker_id != worker_id:
            raise WorkerMismatchError(run_id, worker_id, row.worker_id)
        raise RunFinishedError(run_id, row.status.value)


def reap_stale_runs(
    db: DatabaseConnection, older_than: timedelta, now: datetime | None = None
) -> list[str]:
    """Fail the active runs whose last heartbeat is more than ``older_than`` before ``now``.

    Each gets an ``error_message`` naming its worker and last heartbeat. Returns the ids of the
    runs failed (oldest heartbeat first). Runs moved without a worker (no heartbeat) are left
    alone. Raises ``ValueError`` naming ``older_than`` unless it is positive.
    """
    check_connection(db)
    if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
        raise InvalidArgumentError(f"older_than: must be a positive timedelta, got {older_than!r}")
    moment = resolve_now(now)
    # No stored heartbeat is older than MIN_TIMESTAMP; a longer window would overflow datetime.
    cutoff = moment - min(older_than, moment - MIN_TIMESTAMP)
    with db.get_session() as session:
        if not db.is_sqlite:
            # READ COMMITTED, as for claims: at MariaDB's REPEATABLE READ the locking read keeps
            # a lock on every row its scan looked at, pending ones included, and claimants'
            # SKIP LOCKED then skips them as if taken (the queue looked empty while the reaper's
            # transaction was open). At READ COMMITTED only the rows it returns stay locked.
            session.connection(execution_options={"isolation_level": "READ COMMITTED"})
        stale = session.execute(
            select(RUNS.c.id, RUNS.c.worker_id, RUNS.c.heartbeat_at)
            .where(RUNS.c.status.in_(ACTIVE_STATUSES), RUNS.c.heartbeat_at < cutoff)
            .order_by(RUNS.c.heartbeat_at, RUNS.c.id)
            # Rows a worker is heartbeating right now are skipped: they are evidently alive.
            .with_for_update(skip_locked=True)
        ).all()
        if not stale:
            return []
        session.execute(
            update(RUNS)
            .where(RUNS.c.id == bindparam("run_id"))
            .values(
                status=RunStatus.FAILED,
                completed_at=moment,
                updated_at=moment,
                error_message=bindparam("message"),
            ),
            [
                {
                    "run_id": row.id,
                    "message": (
                        f"worker {row.worker_id!r} sent no heartbeat since "
                        f"{row.heartbeat_at.isoformat()}, more than {older_than} before "
                        f"{moment.isoformat()}: the run was presumed lost"
                    ),
                }
                for row in stale
            ],
        )
        return [row.id for row in stale]
