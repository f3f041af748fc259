"""The dashboard's data: a feed of unfinished runs that reports what moved, and activity stats."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete

from cosmos_models import (
    DatabaseConnection,
    Run,
    RunStatus,
    create_run,
    record_progress,
    transition,
)
from cosmos_models.db.tables import RUNS
from cosmos_models.services.run_feed import ID_CHUNK, RunFeed
from cosmos_models.services.stats import activity_stats
from tests.dashboard.data import add_prompt


def test_first_read_is_a_snapshot_of_unfinished_runs_then_only_moves(
    db: DatabaseConnection,
) -> None:
    prompt_id = add_prompt(db)
    pending = create_run(db, {"prompt_id": prompt_id}).id
    running = create_run(db, {"prompt_id": prompt_id}).id
    done = create_run(db, {"prompt_id": prompt_id}).id
    transition(db, running, RunStatus.RUNNING)
    transition(db, done, RunStatus.CANCELLED)
    feed = RunFeed(db)

    first = feed.changes()
    assert {state.id for state in first.changed} == {pending, running}
    assert first.removed == []
    assert feed.changes().changed == []  # nothing moved

    record_progress(db, running, "inference", 40.0, "step 14/35")
    (moved,) = feed.changes().changed
    assert (moved.id, moved.latest_stage, moved.latest_percentage) == (running, "inference", 40.0)
    assert (moved.latest_message, moved.latest_seq, moved.status) == ("step 14/35", 1, "running")

    transition(db, pending, RunStatus.UPLOADING)
    newcomer = create_run(db, {"prompt_id": prompt_id}).id
    assert {state.id: state.status for state in feed.changes().changed} == {
        pending: RunStatus.UPLOADING,
        newcomer: RunStatus.PENDING,
    }


def test_finished_runs_are_reported_once_with_their_final_state(db: DatabaseConnection) -> None:
    prompt_id = add_prompt(db)
    run_id = create_run(db, {"prompt_id": prompt_id}).id
    transition(db, run_id, RunStatus.RUNNING)
    feed = RunFeed(db)
    feed.changes()
    transition(db, run_id, RunStatus.FAILED, error_message="GPU out of memory")
    (final,) = feed.changes().changed
    assert (final.status, final.error_message) == (RunStatus.FAILED, "GPU out of memory")
    assert final.completed_at is not None
    assert feed.changes().changed == []


def test_deleted_runs_are_reported_as_removed(db: DatabaseConnection) -> None:
    prompt_id = add_prompt(db)
    kept = create_run(db, {"prompt_id": prompt_id}).id
    deleted = create_run(db, {"prompt_id": prompt_id}).id
    feed = RunFeed(db)
    feed.changes()
    with db.engine.begin() as connection:
        connection.execute(delete(RUNS).where(RUNS.c.id == deleted))
    changes = feed.changes()
    assert (changes.changed, changes.removed) == ([], [deleted])
    assert feed.changes().removed == []
    assert kept


def test_more_finished_runs_than_one_lookup_holds(db: DatabaseConnection) -> None:
    prompt_id = add_prompt(db)
    with db.get_session() as session:  # one flush: a bulk insert
        session.add_all(
            Run(id=f"run-{i:04d}", prompt_id=prompt_id, model_type="transfer")
            for i in range(ID_CHUNK + 3)
        )
    feed = RunFeed(db)
    assert len(feed.changes().changed) == ID_CHUNK + 3
    with db.engine.begin() as connection:
        connection.execute(RUNS.update().values(status="cancelled"))
    finished = feed.changes().changed
    assert len(finished) == ID_CHUNK + 3
    assert {state.status for state in finished} == {RunStatus.CANCELLED}


def test_feed_refuses_what_is_not_a_connection() -> None:
    with pytest.raises(ValueError, match="db: must be a DatabaseConnection"):
        RunFeed("sqlite://")  # type: ignore[arg-type]


def test_activity_counts_every_status_and_events_of_the_last_minute(
    db: DatabaseConnection,
) -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    prompt_id = add_prompt(db)
    run_id = create_run(db, {"prompt_id": prompt_id}).id
    create_run(db, {"prompt_id": prompt_id})
    transition(db, run_id, RunStatus.RUNNING)
    for seconds, percentage in ((90, 1.0), (60, 2.0), (59, 3.0), (1, 4.0), (0, 5.0), (-5, 6.0)):
        record_progress(db, run_id, "inference", percentage, timestamp=now - timedelta(0, seconds))
    stats = activity_stats(db, now=now)
    assert stats.runs_by_status == {
        "pending": 1,
        "uploading": 0,
        "running": 1,
        "downloading": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    # 59 s, 1 s and 0 s before now: inside (60 s before is outside, 5 s after is the future).
    assert (stats.events_last_minute, stats.events_per_second) == (3, 0.05)
    assert stats.at == now


def test_activity_refuses_a_naive_now(db: DatabaseConnection) -> None:
    with pytest.raises(ValueError, match="now: must be timezone-aware"):
        activity_stats(db, now=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="db: must be a DatabaseConnection"):
        activity_stats(None)  # type: ignore[arg-type]
