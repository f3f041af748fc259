"""Reliability: a progress writer killed with SIGKILL while its batch's transaction is open.

The batch must be wholly absent afterwards, the database intact, and the next writer unharmed.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cosmos_models import (
    DatabaseConnection,
    init_database,
    latest_progress,
    progress_since,
    record_progress_batch,
)
from cosmos_models.db.tables import PROGRESS
from tests.backends import server_database
from tests.concurrency import progress_events
from tests.conftest import require_backend
from tests.factories import pending_runs

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
BIG_BATCH = 200_000
COMMITTED = 40
# One record_progress_batch call of BIG_BATCH events, numbered after the committed ones.
WRITER = (
    "import sys\n"
    "from cosmos_models import DatabaseConnection, record_progress_batch\n"
    "from tests.concurrency import progress_events\n"
    "url, run_id, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
    "record_progress_batch(DatabaseConnection(url), progress_events(run_id, 0, first, count))\n"
)


def start_writer(url: str, run_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, run_id, str(COMMITTED), str(BIG_BATCH)], cwd=ROOT
    )


def kill_when(process: subprocess.Popen[bytes], condition: Callable[[], bool]) -> None:
    """Poll until ``condition`` holds while the writer still runs, then SIGKILL it."""
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline, "the writer never opened its transaction"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def assert_seqs_without_a_hole(db: DatabaseConnection, run_id: str) -> None:
    """The killed batch took no seq: the events after it continue the run's numbering."""
    seqs = [event.seq for event in progress_since(db, run_id, limit=1000)]
    assert seqs == list(range(1, COMMITTED + 11))


def progress_count(db: DatabaseConnection) -> int:
    with db.get_session(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(PROGRESS)) or 0)


def test_sqlite_writer_killed_mid_batch_leaves_no_trace(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    with init_database(path) as db:
        (run_id,) = pending_runs(db, 1)
        record_progress_batch(db, progress_events(run_id, 0, 0, COMMITTED))
    # Closing the last connection checkpointed and removed the WAL: any WAL is the writer's.
    wal = Path(f"{path}-wal")
    writer = start_writer(f"sqlite:///{path}", run_id)
    # Pages of the open transaction spill into the WAL long before its commit record.
    kill_when(writer, lambda: wal.exists() and wal.stat().st_size > 4 * 2**20)

    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        connection.close()
    with DatabaseConnection(path) as db:
        assert progress_count(db) == COMMITTED
        assert record_progress_batch(db, progress_events(run_id, 0, COMMITTED, 10)) == 10
        assert progress_count(db) == COMMITTED + 10
        assert_seqs_without_a_hole(db, run_id)
        assert latest_progress(db, [run_id])[run_id].message == f"0:{COMMITTED + 9}"
        assert_seqs_without_a_hole(db, run_id)


def test_postgres_writer_killed_mid_batch_leaves_no_trace() -> None:
    require_backend("postgresql")
    with server_database("postgresql") as url, init_database(url) as db:
        (run_id,) = pending_runs(db, 1)
        record_progress_batch(db, progress_events(run_id, 0, 0, COMMITTED))
        # The writer's transaction is open (it has an xid) and its uncommitted rows already
        # fill megabytes of the table's heap: well into the batch, far from its commit. (A
        # batch this large goes in by COPY; smaller ones by INSERT.)
        activity = text(
            "SELECT pid FROM pg_stat_activity WHERE datname = :name AND backend_xid IS NOT NULL "
            "AND (query LIKE 'COPY progress%' OR query LIKE 'INSERT INTO progress%') "
            # Every partition's heap (0006 partitions progress; a plain table is its own tree).
            "AND (SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree('progress')) "
            "> 4 * 1024 * 1024"
        )
        backends: list[int] = []

        def inserting() -> bool:
            with db.engine.connect() as connection:
                backends[:] = connection.scalars(activity, {"name": url.database}).all()
            return bool(backends)

        writer = start_writer(url.render_as_string(hide_password=False), run_id)
        kill_when(writer, inserting)
        # The server rolls the orphaned transaction back once it notices the client is gone.
        gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        deadline = time.monotonic() + 60
        while True:
            with db.engine.connect() as connection:
                if connection.scalar(gone, {"pid": backends[0]}) == 0:
                    break
            assert time.monotonic() < deadline, "the killed writer's backend lingers"
            time.sleep(0.01)
        assert progress_count(db) == COMMITTED
        assert record_progress_batch(db, progress_events(run_id, 0, COMMITTED, 10)) == 10
        assert progress_count(db) == COMMITTED + 10
        assert_seqs_without_a_hole(db, run_id)


def test_mariadb_writer_killed_mid_batch_leaves_no_hole() -> None:
    require_backend("mariadb")
    with server_database("mariadb") as url, init_database(url) as db:
        (run_id,) = pending_runs(db, 1)
        record_progress_batch(db, progress_events(run_id, 0, 0, COMMITTED))
        # The writer is inserting its events (in statements of many rows each): its transaction
        # has numbered them all and holds the run's row lock, its commit far away.
        inserting = text(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND info LIKE 'INSERT INTO progress%'"
        )
        threads: list[int] = []

        def well_into_the_batch() -> bool:
            with db.engine.connect() as connection:
                threads[:] = connection.scalars(inserting).all()
            return bool(threads)

        writer = start_writer(url.render_as_string(hide_password=False), run_id)
        kill_when(writer, well_into_the_batch)
        # The next writer waits for the server to roll the orphan back, then numbers after it.
        assert record_progress_batch(db, progress_events(run_id, 0, COMMITTED, 10)) == 10
        assert progress_count(db) == COMMITTED + 10
        assert_seqs_without_a_hole(db, run_id)
