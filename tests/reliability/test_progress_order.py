"""Reliability: eight writers (threads and processes) on one run while followers read it.

Each event gets its seq inside the writing transaction, under the run's row lock, so a follower
(``follow_progress``) and a poller (``progress_since`` by seq) must see every event exactly once,
seqs 1..N with no gap, each batch as one contiguous block of seqs. ``COSMOS_RELIABILITY_SCALE``
sizes the work: 1 (``make reliability``) is 1,000 events per writer; the default 0.1 keeps
``make test`` quick.
"""

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cosmos_models import (
    DatabaseConnection,
    ProgressRead,
    RunStatus,
    init_database,
    progress_since,
    record_progress_batch,
    transition,
)
from tests.backends import server_database
from tests.concurrency import (
    PROCESS_BACKENDS,
    TIMEOUT,
    progress_events,
    progress_writer,
    sequence_of,
    together,
)
from tests.conftest import _empty_tables, connect, require_backend
from tests.factories import pending_runs
from tests.test_follow import drain, follow_in_thread

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("COSMOS_RELIABILITY_SCALE", "0.1"))
THREADS, PROCESSES, BATCH = 4, 4, 10
EVENTS = max(BATCH, round(1_000 * SCALE / BATCH) * BATCH)  # per writer, whole batches
TOTAL = (THREADS + PROCESSES) * EVENTS


@pytest.fixture(params=PROCESS_BACKENDS)
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseConnection]:
    """A database that threads and processes share (a file or a server), emptied afterwards."""
    db = connect(str(request.param), tmp_path)
    try:
        db.create_tables()
        yield db
    finally:
        if not db.is_sqlite:
            _empty_tables(db)
        db.close()


def poll_by_seq(db: DatabaseConnection, run_id: str, seen: list[ProgressRead]) -> None:
    """A dashboard polling ``progress_since`` from the last seq it saw, until all arrived."""
    after = 0
    while after < TOTAL:
        page = progress_since(db, run_id, after=after, limit=50)
        seen.extend(page)
        after = page[-1].seq if page else after


def test_eight_writers_on_one_run_followers_see_each_event_once_in_order(
    shared_db: DatabaseConnection,
) -> None:
    db = shared_db
    (run_id,) = pending_runs(db, 1)
    transition(db, run_id, RunStatus.RUNNING)
    follower, received = follow_in_thread(db, TOTAL, run_ids=[run_id], after={})
    polled: list[ProgressRead] = []
    poller = threading.Thread(target=poll_by_seq, args=(db, run_id, polled))
    poller.start()

    def write(writer: int) -> None:
        for first in range(0, EVENTS, BATCH):
            record_progress_batch(db, progress_events(run_id, writer, first, BATCH))

    writers = [threading.Thread(target=write, args=(writer,)) for writer in range(THREADS)]
    for thread in writers:
        thread.start()
    url = db.url.render_as_string(hide_password=False)
    outcomes = together(
        [
            (progress_writer, (url, run_id, THREADS + index, EVENTS, BATCH))
            for index in range(PROCESSES)
        ]
    )
    for thread in writers:
        thread.join(TIMEOUT)
    assert outcomes == ["ok"] * PROCESSES
    followed = drain(received, TOTAL)
    follower.join(TIMEOUT)
    poller.join(TIMEOUT)
    assert not poller.is_alive()

    for events in (followed, polled):
        assert [event.seq for event in events] == list(range(1, TOTAL + 1))
        by_writer: dict[str, list[int]] = {}
        for event in events:
            by_writer.setdefault(event.message.split(":")[0], []).append(event.seq)
        assert len(by_writer) == THREADS + PROCESSES
        for writer, seqs in by_writer.items():
            # A writer's batches commit one after another, each as one block of seqs.
            numbers = [sequence_of(e.message) for e in events if e.message.startswith(f"{writer}:")]
            assert numbers == list(range(EVENTS)), writer
            blocks = [seqs[i : i + BATCH] for i in range(0, EVENTS, BATCH)]
            assert all(b == list(range(b[0], b[0] + BATCH)) for b in blocks), writer
    assert [e.id for e in followed] == [e.id for e in polled]


def test_postgres_follower_survives_losing_its_connection() -> None:
    """The listener's backend is terminated (what a server restart does to it): the follower
    reconnects and resumes from its cursor, nothing skipped, nothing twice."""
    require_backend("postgresql")
    with server_database("postgresql") as url, init_database(url) as db:
        (run_id,) = pending_runs(db, 1)
        follower, received = follow_in_thread(db, 30, run_ids=[run_id], after={})
        record_progress_batch(db, progress_events(run_id, 0, 0, 10))
        before = drain(received, 10)
        listener = text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        with db.engine.connect() as connection:
            assert connection.scalars(listener).all() == [True]
        # Committed while the follower has no connection, then after it is back.
        record_progress_batch(db, progress_events(run_id, 0, 10, 10))
        during = drain(received, 10)
        record_progress_batch(db, progress_events(run_id, 0, 20, 10))
        after = drain(received, 10)
        follower.join(TIMEOUT)
        assert [e.seq for e in before + during + after] == list(range(1, 31))
