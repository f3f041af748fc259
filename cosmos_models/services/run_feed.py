"""A live view of the unfinished runs for dashboards: what changed since the last look.

A ``RunFeed`` reads the summary columns of every unfinished run (status index; no JSON column,
no progress row) and reports the runs whose status or latest event moved since its previous
read: new runs, status changes, new progress (the latest event only, which is what a progress
bar shows), then the final state of runs that finished and the ids of runs that were deleted.
Its first read reports every unfinished run: a snapshot to start from.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel
from sqlalchemy import select

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import RUNS
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import UNFINISHED_STATUSES, RunStatus
from cosmos_models.models.types import UtcDatetime
from cosmos_models.services.common import check_connection
from cosmos_models.services.progress_queries import latest_progress

# Runs looked up by id in one statement (the runs that left the unfinished set).
ID_CHUNK: Final = 500


class RunState(BaseModel):
    """What a dashboard row shows of a run: its status, times and latest progress event."""

    id: str
    prompt_id: str
    model_type: str
    status: RunStatus
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    error_message: str | None = None
    worker_id: str | None = None
    latest_seq: int = 0
    latest_stage: str | None = None
    latest_percentage: float | None = None
    latest_message: str | None = None
    latest_at: UtcDatetime | None = None


_STATE_COLUMNS: Final = tuple(RUNS.c[name] for name in RunState.model_fields)


@dataclass
class FeedChanges:
    """One read of a ``RunFeed``: runs whose state moved, and ids of runs that were deleted."""

    changed: list[RunState] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), ID_CHUNK):
        yield ids[start : start + ID_CHUNK]


class RunFeed:
    """Reports the unfinished runs whose state moved between two calls of ``changes``.

    Not thread-safe: one caller polls it (a server shares one feed among its clients).
    """

    def __init__(self, db: DatabaseConnection) -> None:
        """Start a feed on ``db``; the first ``changes`` reports every unfinished run.

        Raises ``ValueError`` naming ``db`` unless it is a ``DatabaseConnection``.
        """
        check_connection(db)
        self.db = db
        # What was last reported of each unfinished run: (status, latest_seq).
        self._seen: dict[str, tuple[str, int]] = {}

    def changes(self) -> FeedChanges:
        """Read the unfinished runs and return what moved since the previous call.

        A run that left the unfinished set is reported once more with its final state, then
        forgotten; one that disappeared is reported in ``removed``. Raises ``DatabaseError``.
        """
        unfinished = RUNS.c.status.in_(UNFINISHED_STATUSES)
        with self.db.get_session(read_only=True) as session:
            # Three narrow columns per unfinished run say what moved; only those are read whole.
            keys = {
                row.id: (_status_value(row.status), int(row.latest_seq))
                for row in session.execute(
                    select(RUNS.c.id, RUNS.c.status, RUNS.c.latest_seq).where(unfinished)
                )
            }
            moved = [run_id for run_id, key in keys.items() if self._seen.get(run_id) != key]
            gone = sorted(set(self._seen) - set(keys))
            wanted = moved + gone
            rows = {}
            if len(moved) > ID_CHUNK:  # a snapshot or a burst: one scan beats many lookups
                rows = {
                    row.id: row
                    for row in session.execute(select(*_STATE_COLUMNS).where(unfinished))
                }
            # By id: the runs that finished (or moved, after a scan that no longer saw them).
            missing = [run_id for run_id in wanted if run_id not in rows]
            for chunk in _chunks(missing):
                query = select(*_STATE_COLUMNS).where(RUNS.c.id.in_(chunk))
                rows.update((row.id, row) for row in session.execute(query))
        result = FeedChanges()
        for run_id in wanted:
            row = rows.get(run_id)
            if row is None:  # deleted (or, moved then deleted between the two reads)
                self._seen.pop(run_id, None)
                result.removed.append(run_id)
                continue
            state = _state(row)
            if state.status.is_final:
                self._seen.pop(run_id, None)
            else:
                self._seen[run_id] = (state.status.value, state.latest_seq)
            result.changed.append(state)
        return result


def _status_value(status: Any) -> str:
    return status.value if isinstance(status, RunStatus) else str(status)


def _state(row: Any) -> RunState:
    return RunState.model_validate(dict(row._mapping))


def run_states(db: DatabaseConnection, runs: Sequence[RunRead]) -> list[RunState]:
    """The ``RunState`` of each run of a listing, in its order, with its latest event.

    One primary-key read of the runs' summaries (``latest_progress``). Raises
    ``DatabaseError``.
    """
    latest = latest_progress(db, [run.id for run in runs])
    states = []
    for run in runs:
        event = latest.get(run.id)
        values = {name: getattr(run, name) for name in RunState.model_fields if hasattr(run, name)}
        if event is not None:
            values.update(
                latest_stage=event.stage,
                latest_percentage=event.percentage,
                latest_message=event.message,
                latest_at=event.timestamp,
            )
        states.append(RunState.model_validate(values))
    return states
