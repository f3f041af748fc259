"""The batch-insert path (services/ingest.py): driver executemany, and COPY on PostgreSQL.

Batches of ``SIZE`` rows take the COPY path on PostgreSQL; the same tests run on every backend,
so the driver-executemany path of SQLite and MariaDB is held to the same results.
"""

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import event, func, select, text

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    IntegrityViolation,
    get_run,
    latest_progress,
    progress_since,
    record_progress,
    record_progress_batch,
)
from cosmos_models.db.tables import PROGRESS
from cosmos_models.services import ingest
from cosmos_models.services.common import MAX_PAGE, NOTIFY_CHANNEL
from tests.backends import admin_url
from tests.conftest import connect
from tests.factories import at
from tests.test_tracking import progress_count, runs

SIZE = 2_000
# Text that COPY's text format must escape (tab, newline, backslash, its NULL marker \N),
# quotes for the INSERT path, and characters beyond ASCII.
HOSTILE = ["tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "quote ' \" ;--", "é 東京 🎬"]


def batch_of(run_id: str, size: int = SIZE) -> list[dict[str, Any]]:
    """``size`` events, every one different in each field that can differ."""
    paris = timezone(timedelta(hours=1))
    return [
        {
            "run_id": run_id,
            "stage": f"stage {i % 7}",
            "percentage": (i % 1001) / 10,
            "message": f"{HOSTILE[i % len(HOSTILE)]} {i}",
            # Alternately in UTC and at +01:00 (stored as UTC), with microseconds.
            "timestamp": (at(i) + timedelta(microseconds=i)).astimezone(paris if i % 2 else UTC),
        }
        for i in range(size)
    ]


def read_all(db: DatabaseConnection, run_id: str) -> list[Any]:
    events: list[Any] = []
    while page := progress_since(db, run_id, after=len(events), limit=MAX_PAGE):
        events.extend(page)
    return events


def test_a_large_batch_is_stored_exactly_numbered_and_summarised(db: DatabaseConnection) -> None:
    run_id, other = runs(db, 2)
    record_progress(db, run_id, "before", 1.0)  # the batch continues its numbering
    batch = batch_of(run_id)
    batch[5]["timestamp"] = batch[6]["timestamp"] = None  # stamped by the writer, alike
    del batch[7]["message"]  # the default
    assert record_progress_batch(db, batch) == SIZE
    stored = read_all(db, run_id)
    assert [event.seq for event in stored] == list(range(1, SIZE + 2))
    ids = [event.id for event in stored]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for given, stored_event in zip(batch, stored[1:], strict=True):
        assert (stored_event.stage, stored_event.percentage) == (
            given["stage"],
            given["percentage"],
        )
        assert stored_event.message == given.get("message", "")
        if given["timestamp"] is not None:
            assert stored_event.timestamp == given["timestamp"]
        assert stored_event.timestamp.tzinfo is UTC
    summary = get_run(db, run_id)
    assert (summary.progress_count, summary.latest_seq) == (SIZE + 1, SIZE + 1)
    assert latest_progress(db, [run_id])[run_id] == stored[-1]
    # The id sequence moved past the batch: the next event gets a new, larger id.
    after = record_progress(db, other, "after", 2.0)
    assert after.id > max(ids)
    assert after.seq == 1


def test_a_bad_value_in_the_middle_leaves_nothing(db: DatabaseConnection) -> None:
    (run_id,) = runs(db, 1)
    for field, bad in [
        ("percentage", float("nan")),
        ("message", "nul \x00 inside"),
        ("message", "lone \ud800 surrogate"),
        ("stage", "   "),
        ("stage", "s" * 101),
        ("timestamp", datetime(2025, 1, 1)),  # naive
        ("timestamp", 1_700_000_000),  # a number is not a time
        ("run_id", 5),
    ]:
        batch = batch_of(run_id)
        batch[SIZE // 2][field] = bad
        with pytest.raises(ValidationError) as caught:
            record_progress_batch(db, batch)
        assert caught.value.errors()[0]["loc"][:2] == (SIZE // 2, field)
    assert progress_count(db) == 0
    assert get_run(db, run_id).progress_count == 0
    assert record_progress_batch(db, batch_of(run_id, 3)) == 3
    assert [event.seq for event in read_all(db, run_id)] == [1, 2, 3]


def test_a_database_error_in_the_middle_of_a_batch_rolls_everything_back(
    db: DatabaseConnection,
) -> None:
    """Row 1,001 collides with an event already stored: the rows before it go too."""
    (run_id,) = runs(db, 1)
    record_progress(db, run_id, "first", 1.0)
    batch = batch_of(run_id)
    with db.begin() as connection:  # a row the numbering does not know about
        connection.execute(
            PROGRESS.insert().values(
                run_id=run_id,
                seq=1002,
                stage="x",
                percentage=0.0,
                message="",
                # The batch's own time for seq 1002: on PostgreSQL's partitioned table the unique
                # key also holds the partition key (see README, Scaling).
                timestamp=batch[1000]["timestamp"],
            )
        )
    with pytest.raises(IntegrityViolation, match=r"seq|Duplicate|UNIQUE"):
        record_progress_batch(db, batch)
    assert progress_count(db) == 2
    summary = get_run(db, run_id)
    assert (summary.progress_count, summary.latest_seq) == (1, 1)
    assert latest_progress(db, [run_id])[run_id].stage == "first"


def test_small_and_large_batches_take_their_paths(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    monkeypatch.setattr(
        ingest, "_copy", lambda connection, tuples: statements.append(f"COPY {len(tuples)}")
    )

    def seen(*args: Any) -> None:
        if args[2].startswith("INSERT INTO progress"):
            statements.append(f"INSERT {len(args[3])}")

    (run_id,) = runs(db, 1)
    event.listen(db.engine, "before_cursor_execute", seen)
    small = ingest.COPY_THRESHOLD - 1
    with db.begin() as connection:
        ingest.insert_rows(connection, [])
    assert statements == []
    record_progress_batch(db, batch_of(run_id, small))
    record_progress_batch(db, batch_of(run_id, ingest.COPY_THRESHOLD))
    large = "COPY" if db.engine.dialect.name == "postgresql" else "INSERT"
    assert statements == [f"INSERT {small}", f"{large} {ingest.COPY_THRESHOLD}"]


def test_copy_notifies_followers_at_commit_and_not_on_rollback(tmp_path: Path) -> None:
    """PostgreSQL only: the NOTIFY that wakes followers (issue 11) also comes with COPY."""
    db = connect("postgresql", tmp_path)
    url = db.engine.url.set(drivername="postgresql")
    listener = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    try:
        db.create_tables()
        run_a, run_b = runs(db, 2)
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        record_progress_batch(db, batch_of(run_a) + batch_of(run_b, 10))
        got = {note.payload for note in listener.notifies(timeout=5, stop_after=2)}
        assert got == {run_a, run_b}
        bad = batch_of(run_a)
        bad[-1]["run_id"] = "rs_unknown"
        with pytest.raises(Exception, match="rs_unknown"):
            record_progress_batch(db, bad)
        assert list(listener.notifies(timeout=0.3)) == []
    finally:
        listener.close()
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM progress"))
            connection.execute(text("DELETE FROM runs"))
            connection.execute(text("DELETE FROM prompts"))
        db.close()


def test_a_connection_lost_during_copy_is_reported_and_replaced(tmp_path: Path) -> None:
    """The server ends the writer's session just before its COPY: one translated error, nothing
    written, and the pool hands out a fresh connection for the next batch."""
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()
        (run_id,) = runs(db, 1)
        killed = threading.Event()

        def kill_before_copy(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "pg_notify" in statement and not killed.is_set():
                killed.set()
                pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                with psycopg.connect(
                    admin_url("postgresql").set(drivername="postgresql").render_as_string(False),
                    autocommit=True,
                ) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", [pid])

        event.listen(db.engine, "after_cursor_execute", kill_before_copy)
        with pytest.raises(DatabaseError):
            record_progress_batch(db, batch_of(run_id))
        assert killed.is_set()
        event.remove(db.engine, "after_cursor_execute", kill_before_copy)
        assert record_progress_batch(db, batch_of(run_id)) == SIZE
        assert [event.seq for event in read_all(db, run_id)][-1] == SIZE
        with db.get_session(read_only=True) as session:
            assert session.execute(select(func.count()).select_from(PROGRESS)).scalar() == SIZE
    finally:
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM progress"))
            connection.execute(text("DELETE FROM runs"))
            connection.execute(text("DELETE FROM prompts"))
        db.close()
