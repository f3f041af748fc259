"""The async follow_progress: its waits leave the event loop free, cancelling it frees its
connection, and the PostgreSQL listener comes back after a drop.

Its reads and semantics are the sync follower's (tests/test_follow.py runs on both sides).
"""

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cosmos_models import DatabaseConnection, DatabaseError, ProgressRead, aio, record_progress
from cosmos_models.aio import AsyncDatabase
from cosmos_models.aio import follow as async_follow
from cosmos_models.services.follow import FollowState
from tests.conftest import _empty_tables as empty_tables
from tests.conftest import connect
from tests.factories import pending_runs
from tests.test_aio import adb_for, ticking_while
from tests.test_follow import listeners


async def next_event(events: Any) -> ProgressRead:
    event: ProgressRead = await anext(events)
    return event


def test_waiting_for_events_leaves_the_loop_free_and_wakes_on_a_commit(
    db: DatabaseConnection,
) -> None:
    (run_id,) = pending_runs(db, 1)

    async def scenario() -> None:
        async with adb_for(db) as adb:
            events = aio.follow_progress(adb, [run_id], after={}, idle_timeout=30)
            # Another writer commits 0.3 s from now; the follower waits for it meanwhile.
            writer = asyncio.get_running_loop().call_later(
                0.3, lambda: record_progress(db, run_id, "late", 5.0)
            )
            event, ticks = await ticking_while(next_event(events))
            writer.cancel()
            await events.aclose()
            assert (event.run_id, event.seq, event.stage) == (run_id, 1, "late")
            assert ticks >= 10

    asyncio.run(scenario())


def test_an_idle_follower_ends_after_its_idle_timeout(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)

    async def scenario() -> None:
        async with adb_for(db) as adb:
            events = aio.follow_progress(adb, [run_id], idle_timeout=0.2, poll_interval=0.05)
            collected, ticks = await ticking_while(_collect(events))
            assert collected == []
            assert ticks >= 5

    asyncio.run(scenario())


async def _collect(events: Any) -> list[ProgressRead]:
    return [event async for event in events]


def test_cancelling_the_task_that_follows_releases_its_connection(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    record_progress(db, run_id, "s", 1.0)
    closed: list[bool] = []

    async def scenario() -> None:
        async with adb_for(db) as adb:
            received: list[ProgressRead] = []

            async def follow() -> None:
                async for event in aio.follow_progress(adb, [run_id], after={}):
                    received.append(event)

            task = asyncio.create_task(follow())
            while not received:
                await asyncio.sleep(0.01)
            if db.engine.dialect.name == "postgresql":
                assert await asyncio.to_thread(listeners, db, 1) == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert [event.seq for event in received] == [1]
            if db.engine.dialect.name == "postgresql":
                assert await asyncio.to_thread(listeners, db, 0) == 0
            # Every pooled connection is back: nothing is checked out by the dead follower.
            closed.append(adb.engine.sync_engine.pool.checkedout() == 0)  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert closed == [True]


def test_the_sqlite_waiter_closes_its_own_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await aio.init_database(tmp_path / "f.db") as adb:
            events = aio.follow_progress(adb, idle_timeout=0.05)
            assert [event async for event in events] == []
            waiter = await async_follow._waiter(
                adb, FollowState(adb.sync_db, None, None, None, None)
            )
            assert isinstance(waiter, async_follow._SQLiteWaiter)
            assert await waiter.wait(0.03) == set()  # nothing committed meanwhile
            await waiter.close()
            with pytest.raises(Exception, match="closed"):
                waiter.check.connection.execute("SELECT 1")

    asyncio.run(scenario())


def test_postgres_async_listener_reconnects_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()

        async def scenario() -> None:
            async with adb_for(db) as adb:
                waiter = async_follow._PostgresWaiter(adb)
                await waiter.connect()
                assert await waiter.wait(0.01) is None  # nothing notified: the safety read
                # The server drops the listener: the next wait notices and lets go of it.
                await asyncio.to_thread(_terminate_listeners, db)
                assert await waiter.wait(1) is None
                assert waiter.raw is None
                real = async_follow._PostgresWaiter.connect
                attempts = []

                async def refused(self: async_follow._PostgresWaiter) -> None:
                    attempts.append(1)
                    if len(attempts) < 3:
                        raise OSError("connection refused")
                    await real(self)

                monkeypatch.setattr(async_follow._PostgresWaiter, "connect", refused)
                assert await waiter.wait(0.01) is None  # still away at the deadline
                assert waiter.raw is None
                assert await waiter.wait(5) is None  # back: check every run
                assert waiter.raw is not None
                assert len(attempts) >= 3
                await waiter.close()
                assert await asyncio.to_thread(listeners, db, 0) == 0

        asyncio.run(scenario())
    finally:
        db.close()


def _terminate_listeners(db: DatabaseConnection) -> None:
    with db.engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
        connection.commit()


def test_a_follower_resumes_across_a_dropped_listener_without_gap_or_duplicate(
    tmp_path: Path,
) -> None:
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()
        (run_id,) = pending_runs(db, 1)

        async def scenario() -> list[int]:
            async with adb_for(db) as adb:
                events = aio.follow_progress(
                    adb, [run_id], after={}, idle_timeout=2, poll_interval=0.1
                )
                seqs = []
                for index in range(6):
                    await asyncio.to_thread(record_progress, db, run_id, "s", float(index))
                    seqs.append((await anext(events)).seq)
                    if index == 2:
                        await asyncio.to_thread(_terminate_listeners, db)
                await events.aclose()
                return seqs

        assert asyncio.run(scenario()) == [1, 2, 3, 4, 5, 6]
    finally:
        empty_tables(db)  # the server database is shared by the session's tests
        db.close()


def test_follow_refuses_what_is_not_an_async_database() -> None:
    with pytest.raises(ValueError, match="db: must be an AsyncDatabase"):
        aio.follow_progress(DatabaseConnection(":memory:"))  # type: ignore[arg-type]
    adb = AsyncDatabase(":memory:")
    try:
        with pytest.raises(ValueError, match="poll_interval"):
            aio.follow_progress(adb, poll_interval=-1)
    finally:
        asyncio.run(adb.close())


def test_a_listener_that_cannot_listen_is_not_left_in_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = connect("postgresql", tmp_path)
    monkeypatch.setattr(async_follow, "NOTIFY_CHANNEL", "1 not an identifier")

    async def scenario() -> None:
        async with adb_for(db) as adb:
            waiter = async_follow._PostgresWaiter(adb)
            with pytest.raises(Exception, match="syntax"):
                await waiter.connect()
            assert waiter.raw is None
            assert adb.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_a_follower_finding_no_free_connection_gets_a_database_error(tmp_path: Path) -> None:
    # Each PostgreSQL follower LISTENs on a pooled connection of its own: past the pool's size
    # the next one waited pool_timeout and raised SQLAlchemy's raw TimeoutError.
    db = connect("postgresql", tmp_path)
    try:
        db.create_tables()
        (run_id,) = pending_runs(db, 1)

        async def scenario() -> None:
            location = db.url.render_as_string(hide_password=False)
            async with AsyncDatabase(location, pool_size=1, max_overflow=0) as adb:
                adb.engine.sync_engine.pool._timeout = 0.2  # type: ignore[attr-defined]
                first = aio.follow_progress(adb, [run_id], idle_timeout=5)
                waiting = asyncio.ensure_future(anext(first))
                await asyncio.sleep(0.5)  # LISTENing on the pool's only connection
                second = aio.follow_progress(adb, [run_id], idle_timeout=5)
                with pytest.raises(DatabaseError, match="no free connection to LISTEN on"):
                    await anext(second)
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
                await first.aclose()

        asyncio.run(scenario())
    finally:
        empty_tables(db)
        db.close()
