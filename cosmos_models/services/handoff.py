"""A worker's hand-off: complete the runs it holds and claim the next ones, all in one call.

``complete_and_claim_runs`` is ``transition_runs(…, "completed")`` of runs the worker holds, then
``claim_next_runs``, all or nothing. On PostgreSQL it is one statement in autocommit: one round
trip and one commit, where the two calls make two of each::

    WITH locked AS (SELECT id, status, worker_id FROM runs WHERE id = ANY(:ids) ORDER BY id
                    FOR UPDATE),
         ready AS (SELECT count(*) FILTER (WHERE status = :from AND worker_id = :worker) = :n
                   AS ok, array_agg(id), array_agg(status), array_agg(worker_id) FROM locked),
         completed AS (UPDATE runs SET status = 'completed', … WHERE id = ANY(:ids)
                       AND (SELECT ok FROM ready) RETURNING id),
         claimed AS (UPDATE runs SET … WHERE id = ANY(ARRAY(SELECT id FROM runs
                     WHERE (SELECT ok FROM ready) AND status = 'pending' ORDER BY created_at, id
                     LIMIT :limit FOR UPDATE SKIP LOCKED)) AND status = 'pending' RETURNING …)
    SELECT ready.*, (SELECT count(*) FROM completed), claimed.* FROM ready LEFT JOIN claimed ON true

``ready`` decides once, before either UPDATE scans a row (each reads it as an InitPlan, a
one-time filter). The completion is ``transition_runs``'s (batch_transitions.py says why its
UPDATE repeats no status condition) with the holder checked too; the claim's choice is gated on
the same answer, so a refused completion claims nothing and the statement changes nothing.
``ready`` is an aggregate, so the result always has a row, and on a refusal that row says which
run stood in the way. The two UPDATEs never touch one row: once ``ready`` holds, every run being
completed is in ``:from`` (never pending) under our lock. Locks are taken in one order: the runs
being completed first (waiting for them, in id order), then pending runs (skipping locked ones,
never waiting). SQLite (``BEGIN IMMEDIATE``) and MariaDB (a READ COMMITTED transaction) run the
steps of ``transition_runs`` and ``claim_next_runs`` in one transaction, rolled back on a refusal.
"""

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    String,
    any_,
    bindparam,
    case,
    func,
    null,
    select,
    true,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.lean import LeanSelect
from cosmos_models.db.recovery import Unit
from cosmos_models.db.tables import RUNS
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.checks import check_status, check_str_iterable
from cosmos_models.models.readmodels import run_reader
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import ALLOWED_TRANSITIONS, RunStatus
from cosmos_models.services.batch_transitions import (
    IDS_ARRAY,
    LOCK_RUNS,
    by_ids,
    check_batch,
    refuse_unless_ready,
)
from cosmos_models.services.claims import claim_in, claim_in_one, claim_parameters, oldest_first
from cosmos_models.services.common import check_connection
from cosmos_models.services.lifecycle import (
    transition_parameters,
    transition_sets,
    transition_values,
)

_COMPLETED: Final = RunStatus.COMPLETED
_COMPLETES_FROM: Final = tuple(
    status for status in RunStatus if _COMPLETED in ALLOWED_TRANSITIONS[status]
)
_LOCKED: Final = (
    select(RUNS.c.id, RUNS.c.status, RUNS.c.worker_id)
    .where(RUNS.c.id == any_(IDS_ARRAY))
    .order_by(RUNS.c.id)
    .with_for_update()
    .cte("locked")
)
_HELD_BY_US: Final = (_LOCKED.c.status == bindparam("t_from")) & (
    _LOCKED.c.worker_id == bindparam("claim_worker")
)
_ALL_HELD: Final = func.count().filter(_HELD_BY_US) == bindparam("t_count")


def _unless_ready(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` of every locked run, as text in an array; NULL when the hand-off goes ahead.

    Only a refusal reads them (to say why), and each result row repeats them: sent and decoded
    for nothing otherwise.
    """
    found = func.array_agg(sql_cast(column, String()), type_=ARRAY(String()))
    return case((_ALL_HELD, null()), else_=found)


_READY: Final = select(
    _ALL_HELD.label("ready"),
    _unless_ready(_LOCKED.c.id).label("found_ids"),
    _unless_ready(_LOCKED.c.status).label("found_statuses"),
    _unless_ready(_LOCKED.c.worker_id).label("found_workers"),
).cte("ready")
_GATE: Final = select(_READY.c.ready).scalar_subquery()


@functools.cache
def _in_one(columns: tuple[str, ...], typed: bool) -> LeanSelect:
    """The PostgreSQL statement of a hand-off, built (and compiled) once per shape."""
    completed = (
        RUNS.update()
        .where(RUNS.c.id == any_(IDS_ARRAY), _GATE)
        .values(transition_sets(columns))
        .returning(RUNS.c.id)
        .cte("completed")
    )
    claimed = claim_in_one(typed=typed, postgresql=True, gate=_GATE).cte("claimed")
    statement = select(
        _READY,
        select(func.count()).select_from(completed).scalar_subquery().label("completed_count"),
        *claimed.c,
    ).select_from(_READY.outerjoin(claimed, true()))
    return LeanSelect(statement)


@functools.cache
def _claimed_reader(columns: tuple[str, ...]) -> Callable[[Sequence[Any]], RunRead]:
    """Builds the claimed run of a result row of ``columns`` (``_in_one``'s)."""
    return run_reader(columns)


def _hand_off(
    unit: Unit,
    ids: list[str],
    source: RunStatus,
    values: dict[str, Any],
    *,
    claim: dict[str, Any],
    typed: bool,
) -> list[RunRead]:
    if not ids:
        return claim_in(unit, claim, typed) if claim["claim_limit"] else []
    moves = {"t_ids": ids, "t_from": source, **transition_parameters(values)}
    if unit.connection.dialect.name == "postgresql":
        statement = _in_one(tuple(values), typed)
        rows = unit.write_lean(statement, {**moves, **claim, "t_count": len(ids)})
        # ready is an aggregate: one row, joined to each claimed run; its columns come first.
        ready, found_ids, found_statuses, found_workers, completed_count = rows[0][:5]
        if not ready:
            found = dict(zip(found_ids or (), found_statuses or (), strict=True))
            holders = dict(zip(found_ids or (), found_workers or (), strict=True))
            refuse_unless_ready(
                ids,
                {key: RunStatus(value) for key, value in found.items()},
                source,
                _COMPLETED,
                (claim["claim_worker"], holders),
            )
            raise AssertionError("unreachable")  # pragma: no cover - refused above
        if completed_count != len(ids):  # pragma: no cover - unreachable while the locks are held
            raise RuntimeError(f"complete_and_claim_runs: {completed_count} completed")
        read = _claimed_reader(statement.columns)
        claimed_id = statement.columns.index("id")
        return oldest_first(read(row) for row in rows if row[claimed_id] is not None)
    locked = {row.id: row for row in unit.read(LOCK_RUNS, {"t_ids": ids})}
    refuse_unless_ready(
        ids,
        {run_id: row.status for run_id, row in locked.items()},
        source,
        _COMPLETED,
        (claim["claim_worker"], {run_id: row.worker_id for run_id, row in locked.items()}),
    )
    result = cast(CursorResult[Any], unit.write(by_ids(tuple(values)), moves))
    if result.rowcount != len(ids):  # pragma: no cover - unreachable while the locks are held
        raise RuntimeError(f"complete_and_claim_runs: {result.rowcount} of {len(ids)} completed")
    return claim_in(unit, claim, typed) if claim["claim_limit"] else []


def complete_and_claim_runs(
    db: DatabaseConnection,
    worker_id: str,
    run_ids: Iterable[str],
    model_types: Iterable[str] | None = None,
    *,
    expected_from: RunStatus | str = RunStatus.RUNNING,
    limit: int = 1,
    to: RunStatus | str = RunStatus.UPLOADING,
    now: datetime | None = None,
) -> list[RunRead]:
    """Complete the runs ``run_ids`` that ``worker_id`` holds, then claim up to ``limit`` more.

    The completion is ``transition_runs(db, run_ids, "completed", expected_from=…)`` and the
    claim ``claim_next_runs(db, worker_id, model_types, limit=limit, to=to)``, both at ``now``,
    committed together: returns the claimed runs, oldest first (``[]`` when none is pending, or
    for ``limit=0``, which only completes). All or nothing: when a run of ``run_ids`` is in the
    way, nothing is completed and nothing claimed. On PostgreSQL it is one statement, one round
    trip and one commit. Raises ``ValueError`` naming ``worker_id``, ``run_ids`` (not an iterable
    of ids, a repeated id, more than 1,000), ``model_types``, ``expected_from`` (no move from it
    to completed), ``limit`` (0 to 1,000), ``to`` or ``now``; for the first run of ``run_ids``
    in the way: ``RunNotFoundError``, ``WorkerMismatchError`` if ``worker_id`` does not hold
    it, ``TransitionConflictError`` (carrying ``current``: cancelled or reaped runs are final)
    if it is not in ``expected_from``; ``DatabaseError`` as ``claim_next_runs`` raises it.
    """
    check_connection(db)
    claim, typed = claim_parameters(worker_id, model_types, limit=limit, to=to, now=now, least=0)
    ids = check_str_iterable(run_ids, "run_ids")
    check_batch(ids)
    source = check_status(expected_from, "expected_from")
    if source not in _COMPLETES_FROM:
        allowed = " or ".join(repr(status.value) for status in _COMPLETES_FROM)
        raise InvalidArgumentError(
            f"expected_from: runs complete from {allowed}, not {source.value!r}"
        )
    values = transition_values(source, _COMPLETED, claim["claim_now"], None)
    return db.run_unit(
        lambda unit: _hand_off(unit, ids, source, values, claim=claim, typed=typed),
        read_committed=True,
    )
