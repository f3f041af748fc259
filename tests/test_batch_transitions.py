"""transition_runs: a batch moves whole or not at all, on every backend and under races."""

from collections import Counter
from typing import Any

import pytest

from cosmos_models import (
    DatabaseConnection,
    InvalidTransitionError,
    RunNotFoundError,
    RunStatus,
    TransitionConflictError,
    claim_next_runs,
    create_run,
    get_run,
    transition,
    transition_runs,
)
from tests.concurrency import attempt_while_held, in_threads
from tests.factories import at, pending_runs


def running_runs(db: DatabaseConnection, count: int) -> list[str]:
    """``count`` runs claimed into running at ``at(100)``, in creation order."""
    run_ids = pending_runs(db, count)
    claimed = claim_next_runs(db, "w", limit=count, to="running", now=at(100))
    assert [run.id for run in claimed] == run_ids
    return run_ids


def test_a_batch_moves_every_run_as_transition_would(db: DatabaseConnection) -> None:
    run_ids = running_runs(db, 4)
    order = [run_ids[2], run_ids[0], run_ids[3]]  # the caller's order, not the table's
    done = transition_runs(db, order, "completed", expected_from="running", now=at(200))
    assert [run.id for run in done] == order
    for run in done:
        assert (run.status, run.started_at, run.completed_at) == (
            RunStatus.COMPLETED,
            at(100),
            at(200),
        )
        assert run.updated_at == at(200)
        assert run.worker_id == "w"
        assert get_run(db, run.id) == run  # what came back is what is stored
    assert get_run(db, run_ids[1]).status == RunStatus.RUNNING  # not named: untouched
    # The shared rule: pending → uploading starts runs; pending → failed never started them.
    fresh = pending_runs(db, 3)
    started = transition_runs(
        db, fresh[:2], RunStatus.UPLOADING, expected_from="pending", now=at(5)
    )
    assert [(run.status, run.started_at) for run in started] == [(RunStatus.UPLOADING, at(5))] * 2
    [failed] = transition_runs(
        db, (i for i in fresh[2:]), "failed", expected_from="pending", error_message="no GPU"
    )
    assert (failed.started_at, failed.error_message) == (None, "no GPU")
    assert failed.completed_at is not None
    assert transition_runs(db, [], "completed", expected_from="running") == []


def _snapshot(db: DatabaseConnection, run_ids: list[str]) -> list[Any]:
    return [get_run(db, run_id) for run_id in run_ids]


def test_every_refusal_moves_nothing_and_names_the_first_offender(db: DatabaseConnection) -> None:
    run_ids = running_runs(db, 4)
    transition(db, run_ids[2], "downloading", expected_from="running", now=at(150))
    before = _snapshot(db, run_ids)
    ok = [run_ids[0], run_ids[1]]

    with pytest.raises(TransitionConflictError) as conflict:
        transition_runs(db, [*ok, run_ids[2], "rs_missing"], "completed", expected_from="running")
    assert (conflict.value.run_id, conflict.value.current) == (run_ids[2], "downloading")
    assert conflict.value.expected == "running"
    with pytest.raises(RunNotFoundError) as missing:
        transition_runs(db, [*ok, "rs_missing", run_ids[2]], "completed", expected_from="running")
    assert missing.value.run_id == "rs_missing"
    # Exact ids: near misses of a stored id name no run (one cut to the column's 255 would).
    longest = create_run(db, {"id": "rs_" + "a" * 252, "prompt_id": get_run(db, ok[0]).prompt_id})
    for near in (longest.id + "b", longest.id + " ", longest.id.upper()):
        with pytest.raises(RunNotFoundError) as missing:
            transition_runs(db, [near], "running", expected_from="pending")
        assert missing.value.run_id == near
    assert get_run(db, longest.id) == longest
    with pytest.raises(InvalidTransitionError) as illegal:
        transition_runs(db, ok, "pending", expected_from="running")
    assert (illegal.value.run_id, illegal.value.from_status) == (run_ids[0], "running")
    with pytest.raises(ValueError, match=r"run_ids: each run once, repeated: '.*'"):
        transition_runs(db, [*ok, run_ids[0]], "completed", expected_from="running")
    with pytest.raises(ValueError, match="run_ids: at most 1000"):
        transition_runs(db, [f"rs_{i}" for i in range(1001)], "failed", expected_from="running")
    with pytest.raises(ValueError, match="error_message: only a failed or cancelled"):
        transition_runs(db, ok, "completed", expected_from="running", error_message="x")
    assert _snapshot(db, run_ids) == before
    # The runs in the way moved on: the same batch now goes through.
    assert len(transition_runs(db, [*ok, run_ids[3]], "failed", expected_from="running")) == 3


def test_claimers_and_batch_completers_complete_every_run_exactly_once(
    db: DatabaseConnection,
) -> None:
    run_ids = pending_runs(db, 30)

    def worker(index: int) -> list[str]:
        done: list[str] = []
        while runs := claim_next_runs(db, f"w{index}", limit=3, to="running"):
            moved = transition_runs(
                db, [run.id for run in runs], "completed", expected_from="running"
            )
            assert [run.status for run in moved] == [RunStatus.COMPLETED] * len(runs)
            done.extend(run.id for run in moved)
        return done

    completed = [run_id for got in in_threads(worker, 6) for run_id in got]
    assert Counter(completed) == Counter(run_ids)  # each once: none twice, none lost
    assert {get_run(db, run_id).status for run_id in run_ids} == {RunStatus.COMPLETED}


def test_overlapping_batches_racing_move_disjoint_wholes(db: DatabaseConnection) -> None:
    run_ids = running_runs(db, 12)
    windows = [run_ids[start : start + 4] for start in range(0, 9)]  # each shares runs

    def complete(index: int) -> list[str]:
        try:
            transition_runs(db, windows[index], "completed", expected_from="running")
        except TransitionConflictError:
            return []
        return windows[index]

    winners = [got for got in in_threads(complete, len(windows)) if got]
    moved = [run_id for got in winners for run_id in got]
    assert winners
    assert len(moved) == len(set(moved))  # no run in two winning batches
    stored = {run_id: get_run(db, run_id).status for run_id in run_ids}
    assert {run_id for run_id, status in stored.items() if status == "completed"} == set(moved)


# Row locks exist on the servers only. Another writer holds a run while the batch starts (its
# snapshot is taken) and commits a new status while the batch waits for the row: the batch
# decides on the newest status, for every run of it, never on the snapshot's.
@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
@pytest.mark.parametrize(
    ("held_from", "held_to", "outcome"),
    [("uploading", "running", "moved"), ("running", "failed", "conflict")],
)
def test_a_batch_waiting_for_a_row_decides_on_its_newest_status(
    backend: str, db: DatabaseConnection, held_from: str, held_to: str, outcome: str
) -> None:
    first, held = running_runs(db, 2)
    result = attempt_while_held(db, held, held_from, held_to, lambda: _attempt(db, [first, held]))
    statuses = [get_run(db, run_id).status for run_id in (first, held)]
    if outcome == "moved":
        assert result == ["moved"]
        assert statuses == ["completed", "completed"]
    else:
        assert result == [f"conflict:{held}:failed"]
        assert statuses == ["running", "failed"]  # the first run did not move alone


def _attempt(db: DatabaseConnection, run_ids: list[str]) -> str:
    try:
        transition_runs(db, run_ids, "completed", expected_from="running")
    except TransitionConflictError as exc:
        return f"conflict:{exc.run_id}:{exc.current}"
    return "moved"
