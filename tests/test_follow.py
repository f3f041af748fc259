"""follow_progress: events as they commit, per run in seq order, resumable, on every backend."""

import queue
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cosmos_models import (
    DatabaseConnection,
    ProgressRead,
    follow_progress,
    record_progress,
    record_progress_batch,
)
from cosmos_models.errors import DatabaseError
from cosmos_models.services import follow
from cosmos_models.services.common import MAX_PAGE
from tests.concurrency import progress_events
from tests.conftest import connect
from tests.factories import pending_runs

SAFETY = 60.0  # idle_timeout: ends a follower that would otherwise wait forever on a bug


def follow_in_thread(
    db: DatabaseConnection, count: int, idle_timeout: float | None = SAFETY, **kwargs: Any
) -> tuple[threading.Thread, "queue.Queue[ProgressRead | str]"]:
    """A follower thread putting ``count`` events on a queue, then closing its generator."""
    received: queue.Queue[ProgressRead | str] = queue.Queue()

    def follow() -> None:
        try:
            with closing(follow_progress(db, idle_timeout=idle_timeout, **kwargs)) as events:
                for index, event in enumerate(events, 1):
                    received.put(event)
                    if index == count:
                        return
        except Exception as exc:  # reported through the queue, so the test shows it
            received.put(f"error: {exc!r}")

    thread = threading.Thread(target=follow)
    thread.start()
    return thread, received


def drain(received: "queue.Queue[ProgressRead | str]", count: int) -> list[ProgressRead]:
    events = []
    for _ in range(count):
        item = received.get(timeout=SAFETY)
        assert not isinstance(item, str), item
        events.append(item)
    return events


def test_follower_sees_every_event_of_its_runs_once_in_seq_order(db: DatabaseConnection) -> None:
    run_a, run_b, other = pending_runs(db, 3)
    record_progress(db, run_a, "before", 1.0)  # seq 1 of run_a: skipped by after={run_a: 1}
    # No idle_timeout: the follower waits as long as it takes (pytest-timeout guards a hang).
    thread, received = follow_in_thread(
        db, 16, idle_timeout=None, run_ids=[run_a, run_b], after={run_a: 1}
    )
    for batch in range(4):
        record_progress_batch(
            db,
            progress_events(run_a, 0, batch * 2, 2)
            + progress_events(other, 0, batch, 1)
            + progress_events(run_b, 0, batch, 1),
        )
    for index in range(4):
        record_progress(db, run_b, "single", float(index))
    events = drain(received, 16)
    thread.join(SAFETY)
    assert not thread.is_alive()
    assert {event.run_id for event in events} == {run_a, run_b}
    assert [e.seq for e in events if e.run_id == run_a] == list(range(2, 10))
    assert [e.seq for e in events if e.run_id == run_b] == list(range(1, 9))
    assert [e.message for e in events if e.run_id == run_a] == [f"0:{i}" for i in range(8)]


def test_follow_resumes_from_a_cursor_and_includes_new_runs(db: DatabaseConnection) -> None:
    (old,) = pending_runs(db, 1)
    record_progress_batch(db, progress_events(old, 0, 0, 5))
    # after=None: from now, the stored events are skipped.
    assert list(follow_progress(db, after=None, idle_timeout=0)) == []
    resumed = list(follow_progress(db, [old], after={old: 2}, idle_timeout=0))
    assert [e.seq for e in resumed] == [3, 4, 5]
    assert list(follow_progress(db, [old], after={old: 5}, idle_timeout=0)) == []
    # Past any seq a run can have (the column is 32-bit): nothing, and no error on any backend.
    assert list(follow_progress(db, [old], after={old: 2**40}, idle_timeout=0)) == []
    (new,) = pending_runs(db, 1)
    record_progress_batch(db, progress_events(new, 1, 0, 3))
    # Every run: a run missing from the cursor is read from its first event.
    everything = list(follow_progress(db, None, after={old: 4}, idle_timeout=0))
    assert sorted((e.run_id, e.seq) for e in everything) == sorted(
        [(new, 1), (new, 2), (new, 3), (old, 5)]
    )


def listeners(db: DatabaseConnection, expected: int) -> int:
    """How many connections LISTEN on the database, waiting (at most 5 s) for ``expected``: a
    backend closed by its client leaves pg_stat_activity a moment later, on a busy machine."""
    query = text(
        "SELECT COUNT(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    deadline = time.monotonic() + 5
    while True:
        with db.engine.connect() as connection:
            count = int(connection.execute(query).scalar_one())
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def test_closing_the_follower_releases_its_connection(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    record_progress(db, run_id, "s", 1.0)
    events = follow_progress(db, [run_id], after={})
    assert next(events).seq == 1
    if db.engine.dialect.name == "postgresql":
        assert listeners(db, 1) == 1
        events.close()
        assert listeners(db, 0) == 0
    else:
        events.close()
    with pytest.raises(StopIteration):
        next(events)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"run_ids": "rs_one"}, "run_ids"),
        ({"run_ids": [1]}, "run_ids"),
        ({"after": {"rs_a": -1}}, "after"),
        ({"after": {"rs_a": True}}, "after"),
        ({"after": {"rs_a": 1.5}}, "after"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"idle_timeout": "1"}, "idle_timeout"),
    ],
)
def test_follow_refuses_bad_arguments(
    db: DatabaseConnection, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        follow_progress(db, **kwargs)


def test_a_backlog_longer_than_a_page_is_read_at_once(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    record_progress_batch(db, progress_events(run_id, 0, 0, MAX_PAGE + 5))
    events = list(follow_progress(db, [run_id], after={}, idle_timeout=0))
    assert [e.seq for e in events] == list(range(1, MAX_PAGE + 6))


def test_reads_are_retried_while_the_database_is_away(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    (run_id,) = pending_runs(db, 1)
    record_progress(db, run_id, "s", 1.0)
    real = follow._latest_seqs
    failures = iter([True, True])

    def flaky(*args: Any) -> dict[str, int]:
        if next(failures, False):
            raise DatabaseError("OperationalError: server closed the connection")
        return real(*args)

    monkeypatch.setattr(follow, "_latest_seqs", flaky)
    assert [e.seq for e in follow_progress(db, [run_id], after={}, idle_timeout=0)] == [1]

    def down(*_: Any) -> dict[str, int]:
        raise DatabaseError("OperationalError: server closed the connection")

    monkeypatch.setattr(follow, "_latest_seqs", down)
    monkeypatch.setattr(follow, "READ_RETRIES", 2)
    with pytest.raises(DatabaseError, match="server closed"):
        list(follow_progress(db, [run_id], after={}, idle_timeout=0))


def test_postgres_listener_reconnects_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener exists on PostgreSQL only (the other backends have nothing to re-open)."""
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()
        waiter = follow._PostgresWaiter(db)
        assert waiter.wait(0.01) is None  # nothing notified: the safety read
        waiter._drop()
        real = follow._PostgresWaiter._connect
        attempts = []

        def refused(self: follow._PostgresWaiter) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise OSError("connection refused")
            real(self)

        monkeypatch.setattr(follow._PostgresWaiter, "_connect", refused)
        assert waiter.wait(0.01) is None  # still away at the deadline
        assert waiter.raw is None
        assert waiter.wait(5) is None  # back: check every run
        assert waiter.raw is not None
        assert len(attempts) == 3
        waiter.close()
    finally:
        db.close()


def test_sqlite_waiter_times_out_with_nothing_and_wakes_on_a_commit(tmp_path: Path) -> None:
    db = DatabaseConnection(tmp_path / "w.db")
    try:
        db.create_tables()
        waiter = follow.SQLiteWaiter(str(db.path), 0.01)
        assert waiter.wait(0.03) == set()  # nothing committed: no run to read
        pending_runs(db, 1)
        assert waiter.wait(5) is None  # another connection committed: check every run
        waiter.close()
    finally:
        db.close()


def test_postgres_listener_lets_go_of_a_connection_the_server_dropped(tmp_path: Path) -> None:
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()
        waiter = follow._PostgresWaiter(db)
        with db.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
            connection.commit()
        assert waiter.wait(5) is None  # the drop is noticed: check every run …
        assert waiter.raw is None  # … and the listener is opened again at the next wait
        assert waiter.wait(0.01) is None
        assert waiter.raw is not None
        waiter.close()
    finally:
        db.close()


def test_a_listener_that_cannot_listen_goes_back_to_no_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = connect("postgresql", tmp_path)
    monkeypatch.setattr(follow, "NOTIFY_CHANNEL", "1 not an identifier")
    try:
        with pytest.raises(Exception, match="syntax"):
            follow._PostgresWaiter(db)
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        db.close()
