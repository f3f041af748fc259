"""Workers taking pending runs: ``claim_next_runs`` (a batch) and ``claim_next_run`` (one).

Where the backend has ``UPDATE … RETURNING`` (PostgreSQL, SQLite ≥ 3.35) a claim is one
statement: ``UPDATE runs SET … WHERE id IN (SELECT id … WHERE status = 'pending' ORDER BY
created_at, id LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING …``. On PostgreSQL it runs in
autocommit, so a claim is one round trip; on SQLite it runs inside ``BEGIN IMMEDIATE``, so claims
take turns. MariaDB has no ``UPDATE … RETURNING``: the transaction reads the chosen rows whole
with ``SELECT … FOR UPDATE SKIP LOCKED``, updates them by id and builds the result from what it
read and what it wrote, without reading them back. Statements are built once, at import: only
their parameters change from call to call, so SQLAlchemy finds them in its compiled cache.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, cast

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    String,
    Update,
    and_,
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
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.checks import check_int, check_status, check_str_iterable
from cosmos_models.models.readmodels import run_from, run_read
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import CLAIM_TARGETS, RunStatus
from cosmos_models.models.types import Identifier
from cosmos_models.services.common import MAX_PAGE, check_connection, resolve_now

_IDENTIFIER: Final = TypeAdapter(Identifier)

# What a claim writes, by parameter name (bindparam names must differ from column names).
_CLAIM_VALUES: Final = {
    "status": bindparam("claim_to", type_=RUNS.c.status.type),
    "worker_id": bindparam("claim_worker", type_=RUNS.c.worker_id.type),
    "started_at": bindparam("claim_now", type_=RUNS.c.started_at.type),
    "heartbeat_at": bindparam("claim_now", type_=RUNS.c.heartbeat_at.type),
    "updated_at": bindparam("claim_now", type_=RUNS.c.updated_at.type),
}
_PENDING: Final = RUNS.c.status == RunStatus.PENDING
# VARCHAR[] without a length, as batch_transitions' ids: a cast would cut longer values.
_TYPES: Final = ARRAY(String())


def oldest_pending(
    columns: Iterable[Any],
    *,
    typed: bool,
    gate: ColumnElement[bool] | None = None,
    postgresql: bool = False,
) -> Select[Any]:
    """The claim's choice: the oldest pending runs (of ``claim_types`` if ``typed``), locked.

    ``gate``, a condition on no row (evaluated once), lets a statement claim only when it holds.
    On PostgreSQL the types are one array parameter, so the SQL text is the same for any number
    of them (compiled once, and prepared by the driver once).
    """
    query = (
        select(*columns)
        .where(_PENDING if gate is None else and_(gate, _PENDING))
        .order_by(RUNS.c.created_at, RUNS.c.id)
        .limit(bindparam("claim_limit"))
        # Rows another claimer has locked are skipped, not waited for.
        .with_for_update(skip_locked=True)  # rendered as nothing on SQLite
    )
    if typed and postgresql:
        query = query.where(RUNS.c.model_type == any_(bindparam("claim_types", type_=_TYPES)))
    elif typed:
        query = query.where(RUNS.c.model_type.in_(bindparam("claim_types", expanding=True)))
    return query


def claim_in_one(
    *, typed: bool, postgresql: bool, gate: ColumnElement[bool] | None = None
) -> Update:
    """The one-statement claim (``UPDATE … RETURNING``), optionally ``gate``d (see above)."""
    choice = oldest_pending([RUNS.c.id], typed=typed, gate=gate, postgresql=postgresql)
    chosen = choice.scalar_subquery()
    # PostgreSQL may run an ``IN (subquery)`` again for each row it joins against, each run
    # locking the next pending row: one call then claims every run. ``= ANY(ARRAY(subquery))``
    # is evaluated once (an InitPlan). SQLite evaluates ``IN (subquery)`` once.
    where = RUNS.c.id == any_(func.array(chosen)) if postgresql else RUNS.c.id.in_(chosen)
    # The status condition repeats the subquery's: while the lock is held it is redundant, and it
    # stays so that a broken lock fails loudly instead of handing one run to two workers.
    return update(RUNS).where(where, _PENDING).values(_CLAIM_VALUES).returning(*RUN_READ_COLUMNS)


_CLAIM_IN_ONE: Final = {
    (typed, postgresql): claim_in_one(typed=typed, postgresql=postgresql)
    for typed in (False, True)
    for postgresql in (False, True)
}
_SELECT_TO_CLAIM: Final = {
    typed: oldest_pending(RUN_READ_COLUMNS, typed=typed) for typed in (False, True)
}
_UPDATE_CLAIMED: Final = (
    update(RUNS)
    .where(RUNS.c.id.in_(bindparam("claim_ids", expanding=True)), _PENDING)
    .values(_CLAIM_VALUES)
)


def claim_in(unit: Unit, parameters: dict[str, Any], typed: bool) -> list[RunRead]:
    """Claim on ``unit`` with ``claim_parameters``' parameters; the claimed runs, oldest first."""
    if unit.connection.dialect.update_returning:
        statement = _CLAIM_IN_ONE[typed, unit.connection.dialect.name == "postgresql"]
        rows = unit.write(statement, parameters).all()
        return oldest_first(run_read(row) for row in rows)
    chosen = unit.read(_SELECT_TO_CLAIM[typed], parameters).all()
    if not chosen:
        return []
    ids = [row.id for row in chosen]
    result = unit.write(_UPDATE_CLAIMED, {**parameters, "claim_ids": ids})
    matched = cast(CursorResult[Any], result).rowcount
    if matched != len(ids):  # pragma: no cover - unreachable while the row locks are held
        raise RuntimeError(f"claim: {len(ids) - matched} locked pending runs changed under us")
    moment = parameters["claim_now"]
    written = {
        "status": parameters["claim_to"],
        "worker_id": parameters["claim_worker"],
        "started_at": moment,
        "heartbeat_at": moment,
        "updated_at": moment,
    }
    return [run_from({**row._mapping, **written}) for row in chosen]


def claim_parameters(
    worker_id: Any,
    model_types: Any,
    *,
    limit: Any,
    to: Any,
    now: Any,
    least: int = 1,
) -> tuple[dict[str, Any], bool]:
    """The checked arguments of a claim as its statements' parameters, and whether it is typed.

    ``least`` is the smallest ``limit`` allowed. Raises ``ValueError`` naming ``worker_id``,
    ``model_types``, ``limit``, ``to`` or ``now``.
    """
    try:
        worker = _IDENTIFIER.validate_python(worker_id)
    except ValidationError as exc:
        raise InvalidArgumentError(f"worker_id: {exc.errors()[0]['msg']}") from None
    check_int(limit, "limit", least, MAX_PAGE)
    target = check_status(to, "to")
    if target not in CLAIM_TARGETS:
        raise InvalidArgumentError(
            f"to: a claimed run moves to 'uploading' or 'running', not {target.value!r}"
        )
    types = (
        None if model_types is None else sorted(set(check_str_iterable(model_types, "model_types")))
    )
    if types is not None and not types:
        raise InvalidArgumentError("model_types: give at least one model type, or None for any")
    parameters: dict[str, Any] = {
        "claim_to": target,
        "claim_worker": worker,
        "claim_now": resolve_now(now),
        "claim_limit": limit,
    }
    if types is not None:
        parameters["claim_types"] = types
    return parameters, types is not None


def oldest_first(runs: Iterable[RunRead]) -> list[RunRead]:
    """``runs`` in claim order: by ``created_at``, then ``id``."""
    return sorted(runs, key=lambda run: (run.created_at, run.id))


def claim_next_runs(
    db: DatabaseConnection,
    worker_id: str,
    model_types: Iterable[str] | None = None,
    *,
    limit: int = 1,
    to: RunStatus | str = RunStatus.UPLOADING,
    now: datetime | None = None,
) -> list[RunRead]:
    """Take up to ``limit`` oldest pending runs (by ``created_at``, then ``id``) for ``worker_id``.

    Returns them oldest first (an empty list when none is pending). Each moves to ``to``
    (``uploading`` by default: inputs go to the GPU node first; pass ``running`` for models
    without an upload step), with ``started_at``, ``heartbeat_at`` and ``updated_at`` set to
    ``now`` and ``worker_id`` recorded. ``model_types`` limits the claim to runs of those types.
    All or nothing: every run returned is held by ``worker_id``, and concurrent claimers never get
    the same run: PostgreSQL and MariaDB skip the rows another claimer has locked (``FOR UPDATE
    SKIP LOCKED``), SQLite claims take turns (``BEGIN IMMEDIATE``). A dead pooled connection is
    replaced and the claim retried once when nothing can have been committed (see
    ``cosmos_models.db.recovery``). Raises ``ValueError`` naming ``worker_id``, ``model_types``,
    ``limit``, ``to`` or ``now``, and ``DatabaseError`` for database errors (including a
    connection lost after a PostgreSQL claim was sent: whether it was taken is then unknown, and
    runs it took are failed by ``reap_stale_runs`` once their heartbeat is stale).
    """
    check_connection(db)
    parameters, typed = claim_parameters(worker_id, model_types, limit=limit, to=to, now=now)
    # READ COMMITTED: MariaDB's default REPEATABLE READ would also lock the gaps of the index
    # it scans (blocking unrelated inserts of new runs until the claim commits) and keep
    # locks on rows it only looked at, which other claimers' SKIP LOCKED then skip.
    return db.run_unit(lambda unit: claim_in(unit, parameters, typed), read_committed=True)


def claim_next_run(
    db: DatabaseConnection,
    worker_id: str,
    model_types: Iterable[str] | None = None,
    *,
    to: RunStatus | str = RunStatus.UPLOADING,
    now: datetime | None = None,
) -> RunRead | None:
    """Take the oldest pending run for ``worker_id``, or None: ``claim_next_runs`` with limit 1.

    Raises what ``claim_next_runs`` raises.
    """
    claimed = claim_next_runs(db, worker_id, model_types, limit=1, to=to, now=now)
    return claimed[0] if claimed else None
