"""Moving many runs at once: ``transition_runs``, all of them or none, one statement on PostgreSQL.

A worker that claimed a batch completes it with one call instead of one ``transition`` (one
commit) per run. The rule of a move (what it writes, its SET clause) is ``transition``'s, from
lifecycle.py; what differs is the all-or-nothing check over the batch:

* PostgreSQL, one statement in autocommit (one round trip)::

      WITH locked AS (SELECT id, status FROM runs WHERE id = ANY(:ids) ORDER BY id FOR UPDATE),
           moved AS (UPDATE runs SET … WHERE id = ANY(:ids)
                     AND (SELECT count(*) FROM locked WHERE status = :from) = :n RETURNING …)
      SELECT locked.id, locked.status, moved.* FROM locked LEFT JOIN moved ON moved.id = locked.id

  ``locked`` waits for rows other writers hold and returns their newest committed versions; the
  count, evaluated once before the UPDATE scans (an InitPlan), decides for all n runs. The
  UPDATE has no ``status = :from`` of its own on purpose: at READ COMMITTED it would test the
  row versions of the statement's snapshot, taken before ``locked`` waited, and a run that
  reached ``:from`` while we waited would be skipped: a partial batch, already committed. Once
  ``locked`` holds every row, nobody else can change them, so the count is the whole check.
  Rows are locked in id order, so two batches sharing runs do not deadlock. When the batch is
  refused, the same result names what each run was (``found_status``) to say why, and the
  statement changed nothing.
* SQLite (``BEGIN IMMEDIATE``) and MariaDB (a READ COMMITTED transaction): the runs are read
  whole and locked (``SELECT … ORDER BY id FOR UPDATE``), checked, then updated by id; the
  result is built from what was read and what was written, and a refusal rolls back.
"""

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    CursorResult,
    Select,
    String,
    Update,
    any_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.recovery import Unit
from cosmos_models.db.tables import RUN_READ_COLUMNS, RUNS
from cosmos_models.errors import (
    InvalidArgumentError,
    InvalidTransitionError,
    RunNotFoundError,
    TransitionConflictError,
    WorkerMismatchError,
)
from cosmos_models.models.checks import check_status, check_str_iterable
from cosmos_models.models.readmodels import run_from, run_read
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import ALLOWED_TRANSITIONS, RunStatus
from cosmos_models.services.common import MAX_PAGE, check_connection, resolve_now
from cosmos_models.services.lifecycle import (
    check_error_message,
    transition_parameters,
    transition_sets,
    transition_values,
)

# VARCHAR[] without the column's length: a cast to VARCHAR(255)[] would silently cut a longer
# id down to one that may exist, and move that run instead.
IDS_ARRAY: Final = bindparam("t_ids", type_=ARRAY(String()))
_LOCKED: Final = (
    select(RUNS.c.id, RUNS.c.status)
    .where(RUNS.c.id == any_(IDS_ARRAY))
    .order_by(RUNS.c.id)
    .with_for_update()
    .cte("locked")
)
_ALL_READY: Final = (
    select(func.count()).select_from(_LOCKED).where(_LOCKED.c.status == bindparam("t_from"))
).scalar_subquery() == bindparam("t_count")
# SQLite and MariaDB: the runs read whole and locked, then updated by id.
LOCK_RUNS: Final = (
    select(*RUN_READ_COLUMNS)
    .where(RUNS.c.id.in_(bindparam("t_ids", expanding=True)))
    .order_by(RUNS.c.id)
    .with_for_update()  # rendered as nothing on SQLite, whose BEGIN IMMEDIATE already excludes
)


@functools.cache
def _in_one(columns: tuple[str, ...]) -> Select[Any]:
    """The PostgreSQL statement for moves writing ``columns``, built once per shape."""
    moved = (
        update(RUNS)
        .where(RUNS.c.id == any_(IDS_ARRAY), _ALL_READY)
        .values(transition_sets(columns))
        .returning(*RUN_READ_COLUMNS)
        .cte("moved")
    )
    return select(
        _LOCKED.c.id.label("found_id"), _LOCKED.c.status.label("found_status"), *moved.c
    ).select_from(_LOCKED.outerjoin(moved, moved.c.id == _LOCKED.c.id))


@functools.cache
def by_ids(columns: tuple[str, ...]) -> Update:
    """The UPDATE of the locked runs by id (SQLite, MariaDB), built once per shape."""
    # The status condition is redundant while the locks are held; it stays so that a broken
    # lock fails loudly (the row count below) instead of moving a run from the wrong status.
    return (
        update(RUNS)
        .where(
            RUNS.c.id.in_(bindparam("t_ids", expanding=True)),
            RUNS.c.status == bindparam("t_from"),
        )
        .values(transition_sets(columns))
    )


def refuse_unless_ready(
    ids: Sequence[str],
    found: Mapping[str, RunStatus],
    source: RunStatus,
    target: RunStatus,
    holders: tuple[str, Mapping[str, str | None]] | None = None,
) -> None:
    """Raise for the first run of ``ids`` (in the caller's order) that is missing or elsewhere.

    With ``holders`` (a worker and each run's ``worker_id``), a run that worker does not hold
    is in the way too (``WorkerMismatchError``), whatever its status.
    """
    for run_id in ids:
        current = found.get(run_id)
        if current is None:
            raise RunNotFoundError(run_id)
        if holders is not None and holders[1][run_id] != holders[0]:
            raise WorkerMismatchError(run_id, holders[0], holders[1][run_id])
        if current != source:
            raise TransitionConflictError(run_id, source.value, current.value, target.value)


def check_batch(ids: list[str], name: str = "run_ids") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``ids`` has up to ``MAX_PAGE`` ids, each once."""
    if len(ids) > MAX_PAGE:
        raise InvalidArgumentError(f"{name}: at most {MAX_PAGE} runs at once, got {len(ids)}")
    repeated = sorted(run_id for run_id, seen in Counter(ids).items() if seen > 1)
    if repeated:
        raise InvalidArgumentError(
            f"{name}: each run once, repeated: {', '.join(map(repr, repeated))}"
        )


def _move_all(
    unit: Unit, ids: list[str], source: RunStatus, target: RunStatus, values: dict[str, Any]
) -> list[RunRead]:
    columns = tuple(values)
    parameters = {"t_ids": ids, "t_from": source, **transition_parameters(values)}
    if unit.connection.dialect.name == "postgresql":
        rows = unit.write(_in_one(columns), {**parameters, "t_count": len(ids)}).all()
        moved = {row.found_id: run_read(row) for row in rows if row.id is not None}
        if len(moved) != len(ids):
            if moved:  # pragma: no cover - unreachable while the row locks are held
                raise RuntimeError(f"transition_runs: {len(moved)} of {len(ids)} runs moved")
            refuse_unless_ready(
                ids, {row.found_id: row.found_status for row in rows}, source, target
            )
            raise AssertionError("unreachable")  # pragma: no cover - refused above
        return [moved[run_id] for run_id in ids]
    locked = {row.id: row for row in unit.read(LOCK_RUNS, {"t_ids": ids})}
    refuse_unless_ready(ids, {run_id: row.status for run_id, row in locked.items()}, source, target)
    result = cast(CursorResult[Any], unit.write(by_ids(columns), parameters))
    if result.rowcount != len(ids):  # pragma: no cover - unreachable while the locks are held
        raise RuntimeError(f"transition_runs: {result.rowcount} of {len(ids)} runs moved")
    return [run_from({**locked[run_id]._mapping, **values}) for run_id in ids]


def transition_runs(
    db: DatabaseConnection,
    run_ids: Iterable[str],
    to: RunStatus | str,
    *,
    expected_from: RunStatus | str,
    error_message: str | None = None,
    now: datetime | None = None,
) -> list[RunRead]:
    """Move every run of ``run_ids`` from ``expected_from`` to ``to`` at once, or none of them.

    Returns the new rows in the order of ``run_ids`` (``[]`` for no ids). Each run changes as
    ``transition`` would change it (``started_at``, ``completed_at``, ``updated_at``,
    ``error_message``); on PostgreSQL the whole batch is one statement and one round trip.
    Raises ``ValueError`` naming ``run_ids`` (not an iterable of ids, a repeated id, more than
    1,000), ``to``, ``expected_from``, ``error_message`` or ``now``; and, nothing moved, for the
    first run of ``run_ids`` that stands in the way: ``InvalidTransitionError`` if the lifecycle
    forbids the move, ``RunNotFoundError``, ``TransitionConflictError`` (carrying ``current``)
    if the run is not in ``expected_from``; ``DatabaseError`` for database errors.
    """
    check_connection(db)
    ids = check_str_iterable(run_ids, "run_ids")
    target = check_status(to, "to")
    source = check_status(expected_from, "expected_from")
    check_error_message(target, error_message)
    moment = resolve_now(now)
    check_batch(ids)
    if not ids:
        return []
    if target not in ALLOWED_TRANSITIONS[source]:
        raise InvalidTransitionError(ids[0], source.value, target.value)
    values = transition_values(source, target, moment, error_message)
    # READ COMMITTED on MariaDB: each statement reads the newest committed rows (as PostgreSQL's
    # default does), and only the rows locked stay locked, not the gaps of the scan.
    return db.run_unit(
        lambda unit: _move_all(unit, ids, source, target, values), read_committed=True
    )
