"""cosmos_models.aio.inline: short SQLite calls on the loop thread, never waiting there.

Which thread ran a statement is read from SQLite's trace callback on every connection the
database opens (lean reads bypass SQLAlchemy's statement events); the lock that makes a write
wait is held from another connection, as another process would.
"""

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from cosmos_models import (
    DatabaseConnection,
    RunNotFoundError,
    aio,
    list_runs,
    progress_since,
)
from cosmos_models.aio import AsyncDatabase, inline
from cosmos_models.db.migrate import upgrade
from tests.factories import new_prompt, pending_runs
from tests.test_aio import ticking_while

LOOP = threading.main_thread().name
PROMPT = {"model_type": "transfer", "prompt_text": "p", "inputs": {}, "parameters": {}}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    location = tmp_path / "inline.db"
    upgrade(str(location), backup=False)
    return location


class Statements:
    """The (thread name, SQL) of every statement SQLite ran on connections ``adb`` opens from
    now on (make it before the first call), in order."""

    def __init__(self, adb: AsyncDatabase) -> None:
        self.seen: list[tuple[str, str]] = []

        def trace(statement: str) -> None:
            self.seen.append((threading.current_thread().name, statement))

        @event.listens_for(adb.sync_db.engine, "connect")
        def _traced(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.set_trace_callback(trace)

    def threads(self) -> set[str]:
        return {name for name, _ in self.seen}

    def clear(self) -> None:
        self.seen.clear()


def hold_write_lock(path: Path, seconds: float) -> Iterator[float]:
    """Hold SQLite's write lock from another connection for ``seconds``; yields once it is
    held, then the moment it was let go."""
    db = DatabaseConnection(path)
    held, released = threading.Event(), []

    def hold() -> None:
        with db.begin():  # BEGIN IMMEDIATE
            held.set()
            time.sleep(seconds)
            released.append(time.monotonic())

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    yield 0.0
    thread.join(10)
    db.close()
    yield released[0]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def pragma(adb: AsyncDatabase, name: str) -> set[int]:
    """The values of a pragma on every connection the pool holds now."""
    pool: Any = adb.sync_db.engine.pool
    found = set()
    for record in list(pool._pool.queue):
        if record.dbapi_connection is not None:
            found.add(record.dbapi_connection.execute(f"PRAGMA {name}").fetchone()[0])
    return found


def busy_timeouts(adb: AsyncDatabase) -> set[int]:
    return pragma(adb, "busy_timeout")


def test_short_reads_and_writes_run_on_the_loop_thread(path: Path) -> None:
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            await aio.record_progress(adb, run_id, "uploading", 10.0)
            detail = await aio.get_run_detail(adb, run_id)
            assert detail.latest_progress is not None
            assert detail.latest_progress.percentage == 10.0
            assert statements.threads() == {LOOP}
            # Not marked short: a worker thread, as before.
            statements.clear()
            await aio.record_progress_batch(
                adb, [{"run_id": run_id, "stage": "s", "percentage": 20.0}]
            )
            assert LOOP not in statements.threads()
            assert busy_timeouts(adb) == {30_000}

    run(scenario())
    db.close()


def test_an_error_of_the_call_itself_is_raised_from_the_loop_thread(path: Path) -> None:
    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            with pytest.raises(RunNotFoundError, match="rs_missing"):
                await aio.get_run(adb, "rs_missing")
            with pytest.raises(RunNotFoundError, match="rs_missing"):
                await aio.record_progress(adb, "rs_missing", "s", 1.0)
            assert statements.threads() == {LOOP}  # not tried again in a thread

    run(scenario())


def test_a_write_finding_the_lock_taken_waits_in_a_thread_and_is_applied_once(
    path: Path,
) -> None:
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            await aio.get_run(adb, run_id)
            lock = hold_write_lock(path, 0.3)
            next(lock)
            event_, ticks = await ticking_while(aio.record_progress(adb, run_id, "s", 5.0))
            finished = time.monotonic()
            released = next(lock)
            assert finished >= released  # it waited for the lock …
            assert ticks >= 5  # … in a thread, while the loop ran
            begins = [name for name, sql in statements.seen if sql == "BEGIN IMMEDIATE"]
            assert begins[0] == LOOP  # tried inline first, refused at once
            assert set(begins[1:]) - {LOOP}  # then waited in a worker thread
            assert busy_timeouts(adb) == {30_000}
            assert event_.seq == 1

    run(scenario())
    events = progress_since(db, run_id)
    assert [(e.seq, e.percentage) for e in events] == [(1, 5.0)]  # once, not twice
    db.close()


def test_a_read_over_its_budget_is_interrupted_and_run_again_in_a_thread(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = DatabaseConnection(path)
    pending_runs(db, 300)
    expected = list_runs(db, limit=inline.SMALL)

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            monkeypatch.setattr(inline, "BUDGET_S", -1.0)  # always over: interrupted at once
            found = await aio.list_runs(adb, limit=inline.SMALL)
            assert found == expected
            assert LOOP in statements.threads()  # began inline …
            assert statements.threads() - {LOOP}  # … and finished in a worker thread
            monkeypatch.undo()
            statements.clear()
            assert await aio.list_runs(adb, limit=inline.SMALL) == expected
            assert statements.threads() == {LOOP}

    run(scenario())
    db.close()


@pytest.mark.parametrize("options", [{"read_only": True}, {"sqlite_wal": False}])
def test_no_call_runs_inline_without_wal(path: Path, options: dict[str, Any]) -> None:
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)
    db.close()

    async def scenario() -> None:
        async with AsyncDatabase(path, **options) as adb:
            statements = Statements(adb)
            await aio.get_run(adb, run_id)
            assert statements.seen
            assert LOOP not in statements.threads()

    run(scenario())


def test_a_write_that_committed_is_never_run_again(path: Path) -> None:
    """The move to a thread happens only before anything was committed: a call that committed
    one transaction and then meets a taken lock waits for it where it is."""
    calls = 0

    def two_transactions(db: DatabaseConnection) -> None:
        nonlocal calls
        calls += 1
        new_prompt(db)
        lock = hold_write_lock(path, 0.2)
        next(lock)
        try:
            new_prompt(db)
        finally:
            next(lock)

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            await adb.run_short(True, two_transactions)
            assert busy_timeouts(adb) == {30_000}

    run(scenario())
    db = DatabaseConnection(path)
    with db.begin() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM prompts")).scalar_one() == 2
    assert calls == 1
    db.close()


def test_writers_meeting_taken_locks_lose_and_double_nothing(path: Path) -> None:
    """8 tasks record progress into 4 runs while another connection takes the write lock at
    random moments: every event is there once, each run's seqs 1..N without a gap."""
    db = DatabaseConnection(path)
    run_ids = pending_runs(db, 4)
    rng = random.Random(7)
    stop = threading.Event()

    def interfere() -> None:
        other = DatabaseConnection(path)
        while not stop.is_set():
            with other.begin():
                time.sleep(rng.uniform(0, 0.01))
            time.sleep(rng.uniform(0, 0.01))
        other.close()

    interferer = threading.Thread(target=interfere)
    interferer.start()
    sent: dict[str, list[float]] = {run_id: [] for run_id in run_ids}

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:

            async def writer(task: int) -> None:
                for step in range(25):
                    run_id = run_ids[(task + step) % len(run_ids)]
                    percentage = float(task * 100 + step) / 10
                    await aio.record_progress(adb, run_id, "s", percentage)
                    sent[run_id].append(percentage)

            await asyncio.gather(*(writer(task) for task in range(8)))

    try:
        run(scenario())
    finally:
        stop.set()
        interferer.join(10)
    for run_id in run_ids:
        events = progress_since(db, run_id, limit=1000)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert sorted(e.percentage for e in events) == sorted(sent[run_id])
    db.close()


def test_the_progress_handler_is_only_on_while_the_loop_thread_reads(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler left on a connection would take the GIL back every few microseconds of a long
    query in a worker thread: it is on only while an inline read uses the connection."""
    db = DatabaseConnection(path)
    pending_runs(db, 300)
    db.close()
    calls = {"loop": 0, "worker": 0}

    def counting() -> int:
        calls["loop" if threading.current_thread().name == LOOP else "worker"] += 1
        return 0

    monkeypatch.setattr(inline, "_over_budget", counting)

    def count_runs(db: DatabaseConnection) -> int:
        with db.begin() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM runs")).scalar_one())

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            for _ in range(3):
                await aio.list_runs(adb, limit=inline.SMALL)  # inline: lean reader connections
                await adb.run_sync(list_runs, limit=300)  # the same connections, in a thread
                await adb.run_sync(count_runs)  # a pooled connection, in a thread

    run(scenario())
    assert calls["loop"] > 0
    assert calls["worker"] == 0


def test_calls_asking_for_many_items_run_in_a_thread(path: Path) -> None:
    db = DatabaseConnection(path)
    run_ids = pending_runs(db, inline.SMALL + 1)
    db.close()

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            for call in (
                aio.list_runs(adb, limit=inline.SMALL + 1),
                aio.latest_progress(adb, run_ids),
                aio.claim_next_runs(adb, "w", limit=inline.SMALL + 1),
            ):
                await call
                assert statements.seen
                assert LOOP not in statements.threads()
                statements.clear()

    run(scenario())


async def longest_stall(work: Any, period: float = 0.005) -> tuple[Any, float]:
    """Await ``work`` beside a ticker; return its result and the longest gap between ticks."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(period)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    result = await work
    await asyncio.sleep(period * 3)  # let the ticker see the gap the work may have made
    stop.set()
    await task
    return result, max(gaps)


def test_inline_call_waits_on_the_pool_when_worker_threads_hold_every_connection(
    path: Path,
) -> None:
    """WorkerThreads is sized pool_size + max_overflow: workers can hold every pooled
    connection, and the loop thread is one consumer more. An inline call then blocks the
    loop in QueuePool's checkout until a worker gives one back (here: until the SQLite lock
    it waits for is released, up to busy_timeout; or pool_timeout=30 s, then TimeoutError)."""
    hold = hold_write_lock(path, 1.0)
    next(hold)  # another connection holds the write lock for 1 s

    async def scenario() -> float:
        async with AsyncDatabase(path) as adb:  # 15 workers; SQLite's QueuePool 5 + 10
            # 15 writes: inline BUSY -> moved to the 15 workers, each taking a pooled connection
            # and waiting (in its thread, rightly) for the write lock.
            first = asyncio.gather(*(aio.create_prompt(adb, PROMPT) for _ in range(15)))
            await asyncio.sleep(0.2)
            # B: inline -> pool checkout on the loop thread, which now waits for A.
            _, stall = await longest_stall(aio.create_prompt(adb, PROMPT))
            await first
            return stall

    stall = asyncio.run(scenario())
    next(hold, None)
    assert stall < 0.1, f"event loop blocked {stall:.3f} s waiting for a pooled connection"


def test_wal_checkpoints_run_in_a_worker_thread_never_in_an_inline_commit(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 10)
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)
    db.close()

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            checkpoints = adb._checkpoints
            assert checkpoints is not None
            for step in range(35):
                await aio.record_progress(adb, run_id, "s", float(step))
                checkpoints.join()  # one at a time: each due one starts (a loaded machine)
            ran = [name for name, sql in statements.seen if "wal_checkpoint" in sql]
            assert len(ran) >= 3  # due at commits 10, 20, 30 (again after one that gave up)
            assert set(ran) == {"cosmos-db-checkpoint"}
            assert pragma(adb, "wal_autocheckpoint") == {0}

    run(scenario())
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size < 4 * 1024 * 1024
