"""complete_and_claim_runs: a worker completes its batch and claims the next, all or nothing."""

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from cosmos_models import (
    DatabaseConnection,
    RunNotFoundError,
    RunStatus,
    TransitionConflictError,
    WorkerMismatchError,
    cancel_run,
    claim_next_runs,
    complete_and_claim_runs,
    create_run,
    get_run,
    transition,
)
from cosmos_models.db.tables import RUNS
from tests.concurrency import (
    PROCESS_BACKENDS,
    attempt_while_held,
    hand_off_all,
    in_processes,
    in_threads,
    process_url,
)
from tests.factories import at, pending_runs


def _held(db: DatabaseConnection, worker: str, count: int, now: float = 100) -> list[str]:
    """``count`` new runs claimed into running by ``worker`` at ``at(now)``, oldest first."""
    run_ids = pending_runs(db, count)
    claimed = claim_next_runs(db, worker, limit=count, to="running", now=at(now))
    assert [run.id for run in claimed] == run_ids
    return run_ids


def _statuses(db: DatabaseConnection) -> dict[str, tuple[str, str | None]]:
    """Every run's status and holder: what a refusal must leave exactly as it was."""
    with db.engine.connect() as connection:
        rows = connection.execute(select(RUNS.c.id, RUNS.c.status, RUNS.c.worker_id)).all()
    return {row.id: (row.status, row.worker_id) for row in rows}


def test_a_hand_off_completes_the_batch_and_claims_the_next(db: DatabaseConnection) -> None:
    done = _held(db, "w", 3)
    queue = pending_runs(db, 4)
    order = [done[2], done[0], done[1]]  # any order
    claimed = complete_and_claim_runs(db, "w", order, limit=3, to="running", now=at(200))
    assert [run.id for run in claimed] == queue[:3]  # the oldest pending, oldest first
    for run in claimed:
        assert (run.status, run.worker_id) == (RunStatus.RUNNING, "w")
        assert run.started_at == run.heartbeat_at == run.updated_at == at(200)
        assert get_run(db, run.id) == run  # what came back is what is stored
    for run_id in done:  # completed as transition_runs completes: started_at kept
        run = get_run(db, run_id)
        assert (run.status, run.worker_id) == (RunStatus.COMPLETED, "w")
        assert (run.started_at, run.completed_at, run.updated_at) == (at(100), at(200), at(200))
    # The last pending run; then only the completion happens, and the result is empty.
    [last] = complete_and_claim_runs(db, "w", [claimed[0].id], limit=5, now=at(300))
    assert (last.id, last.status) == (queue[3], RunStatus.UPLOADING)
    assert complete_and_claim_runs(db, "w", [c.id for c in claimed[1:]], limit=5) == []
    assert get_run(db, claimed[2].id).status == RunStatus.COMPLETED
    # No runs to complete: a plain claim. limit=0: a plain completion.
    fresh = pending_runs(db, 2)
    [first] = complete_and_claim_runs(db, "w", [], to="running", now=at(400))
    assert first.id == fresh[0]
    assert complete_and_claim_runs(db, "w", [first.id], limit=0) == []
    assert get_run(db, first.id).status == RunStatus.COMPLETED
    assert get_run(db, fresh[1]).status == RunStatus.PENDING


def test_a_hand_off_claims_only_the_model_types_asked_for(db: DatabaseConnection) -> None:
    done = _held(db, "w", 1)
    other = pending_runs(db, 2, model_type="reason")
    wanted = pending_runs(db, 1, model_type="predict")
    claimed = complete_and_claim_runs(db, "w", done, ["predict"], limit=3)
    assert [run.id for run in claimed] == wanted
    assert {get_run(db, run_id).status for run_id in other} == {RunStatus.PENDING}
    # From downloading, where a run with outputs to fetch completes from.
    transition(db, wanted[0], "running", expected_from="uploading")
    transition(db, wanted[0], "downloading", expected_from="running")
    assert complete_and_claim_runs(db, "w", wanted, expected_from="downloading", limit=0) == []
    assert get_run(db, wanted[0]).status == RunStatus.COMPLETED


def test_a_refused_hand_off_completes_nothing_and_claims_nothing(db: DatabaseConnection) -> None:
    mine = _held(db, "w", 3)
    theirs = _held(db, "v", 1)
    [unheld] = pending_runs(db, 1)  # pending: nobody holds it, and a claim would take it
    cancel_run(db, mine[2])  # cancelled under the worker: final
    before = _statuses(db)
    ok = mine[:2]

    def refused(run_ids: list[str], expected: type[Exception]) -> Any:
        with pytest.raises(expected) as caught:
            complete_and_claim_runs(db, "w", run_ids, limit=5, to="running")
        assert _statuses(db) == before  # nothing completed, nothing claimed
        return caught.value

    mismatch = refused([*ok, theirs[0], mine[2]], WorkerMismatchError)
    assert (mismatch.run_id, mismatch.worker_id, mismatch.holder) == (theirs[0], "w", "v")
    assert refused([*ok, unheld], WorkerMismatchError).holder is None
    conflict = refused([*ok, mine[2], "rs_missing"], TransitionConflictError)
    assert (conflict.run_id, conflict.current, conflict.expected) == (
        mine[2],
        "cancelled",
        "running",
    )
    assert refused([*ok, "rs_missing", mine[2]], RunNotFoundError).run_id == "rs_missing"
    assert refused(["rs_missing"], RunNotFoundError).run_id == "rs_missing"
    # Not a run of this worker's status: downloading is not running.
    transition(db, ok[1], "downloading", expected_from="running")
    before = _statuses(db)
    assert refused(ok, TransitionConflictError).current == "downloading"
    # Exact ids: a near miss of a stored id names no run.
    near = create_run(db, {"id": "rs_" + "a" * 252, "prompt_id": get_run(db, ok[0]).prompt_id})
    before = _statuses(db)
    assert refused([near.id + "b"], RunNotFoundError).run_id == near.id + "b"
    # What was in the way moved on: the same worker's runs now go through.
    assert [run.id for run in complete_and_claim_runs(db, "w", ok[:1], limit=1)] == [unheld]


def test_threads_handing_off_complete_every_run_exactly_once(db: DatabaseConnection) -> None:
    run_ids = pending_runs(db, 30)
    got = in_threads(lambda index: hand_off_all(db, f"w{index}", 3), 6)
    completed = [run_id for ids in got for run_id in ids]
    assert Counter(completed) == Counter(run_ids)  # each once: none twice, none lost
    assert {row[0] for row in _statuses(db).values()} == {RunStatus.COMPLETED}
    holders = {run_id: f"w{index}" for index, ids in enumerate(got) for run_id in ids}
    assert {run_id: row[1] for run_id, row in _statuses(db).items()} == holders


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_processes_handing_off_complete_every_run_exactly_once(
    backend: str, db: DatabaseConnection
) -> None:
    url = process_url(db)
    run_ids = pending_runs(db, 60)
    outcomes = in_processes("hand-off:4", url, [f"worker-{i}" for i in range(6)])
    assert not [outcome for outcome in outcomes if isinstance(outcome, str)], outcomes
    completed = [run_id for ids in outcomes for run_id in ids]
    assert Counter(completed) == Counter(run_ids)
    with db.engine.connect() as connection:
        counts: dict[str, int] = dict(
            connection.execute(select(RUNS.c.status, func.count()).group_by(RUNS.c.status)).all()
        )
    assert counts == {RunStatus.COMPLETED: 60}


# Row locks exist on the servers only. Another writer holds one of the worker's runs while the
# hand-off starts and commits a new status while it waits: the hand-off decides on the newest
# status, for the completion and the claim together.
@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
@pytest.mark.parametrize(
    ("held_from", "held_to", "outcome"),
    [("uploading", "running", "handed-off"), ("running", "failed", "conflict")],
)
def test_a_hand_off_waiting_for_a_row_decides_on_its_newest_status(
    backend: str, db: DatabaseConnection, held_from: str, held_to: str, outcome: str
) -> None:
    first, held = _held(db, "w", 2)
    [queued] = pending_runs(db, 1)
    result = attempt_while_held(db, held, held_from, held_to, lambda: _attempt(db, [first, held]))
    statuses = [get_run(db, run_id).status for run_id in (first, held, queued)]
    if outcome == "handed-off":
        assert result == [f"claimed:{queued}"]
        assert statuses == ["completed", "completed", "running"]
    else:
        assert result == [f"conflict:{held}:failed"]
        assert statuses == ["running", "failed", "pending"]  # nothing moved alone


def _attempt(db: DatabaseConnection, run_ids: list[str]) -> str:
    try:
        claimed = complete_and_claim_runs(db, "w", run_ids, to="running")
    except TransitionConflictError as exc:
        return f"conflict:{exc.run_id}:{exc.current}"
    return "claimed:" + ",".join(run.id for run in claimed)
