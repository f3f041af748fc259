"""cosmos_models.aio.inline at its limits: one-shot iterators, raising calls, large payloads,
sustained writes (the WAL stays bounded) and checkpoints across event loops.
"""

import asyncio
from pathlib import Path

import pytest

from cosmos_models import (
    DatabaseConnection,
    RunNotFoundError,
    aio,
    claim_next_runs,
    get_run,
    latest_progress,
    record_progress_batch,
)
from cosmos_models.aio import AsyncDatabase, inline
from cosmos_models.db.migrate import upgrade
from tests.factories import pending_runs
from tests.test_aio_inline import LOOP, Statements, hold_write_lock, longest_stall


@pytest.fixture
def path(tmp_path: Path) -> Path:
    location = tmp_path / "review.db"
    upgrade(str(location), backup=False)
    return location


def wal_mb(path: Path) -> float:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size / 1e6 if wal.exists() else 0.0


def test_a_one_shot_iterator_is_not_consumed_by_the_inline_attempt(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inline attempt consumes a generator of ids; the re-run in a thread gets it empty."""
    db = DatabaseConnection(path)
    run_ids = pending_runs(db, 50)
    record_progress_batch(db, [{"run_id": r, "stage": "s", "percentage": 1.0} for r in run_ids])
    assert len(latest_progress(db, (r for r in run_ids))) == 50  # the sync side

    async def scenario() -> int:
        async with AsyncDatabase(path) as adb:
            monkeypatch.setattr(inline, "BUDGET_S", -1.0)  # interrupted, moved to a thread
            return len(await aio.latest_progress(adb, (r for r in run_ids)))

    assert asyncio.run(scenario()) == 50  # fails: {} (silently wrong)
    db.close()


def test_a_hand_off_whose_lock_is_taken_still_completes_a_generator_of_runs(path: Path) -> None:
    """BUSY inline -> re-run in a thread with run_ids already consumed: nothing is completed,
    yet the call succeeds (and with limit > 0 claims more): the runs stay 'running'."""
    db = DatabaseConnection(path)
    pending_runs(db, 2)
    held = [run.id for run in claim_next_runs(db, "w", limit=2, to="running")]

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            lock = hold_write_lock(path, 0.2)
            next(lock)
            await aio.complete_and_claim_runs(adb, "w", (r for r in held), limit=0)
            next(lock)

    asyncio.run(scenario())
    assert [get_run(db, r).status for r in held] == ["completed", "completed"]  # fails: running
    db.close()


def test_inline_calls_that_raise_still_let_other_tasks_run(path: Path) -> None:
    """should_yield is only consulted after a call that returned: a loop of calls that raise
    (unknown runs, final runs, conflicts) keeps the event loop for its whole length."""

    async def scenario() -> float:
        async with AsyncDatabase(path) as adb:

            async def lookups() -> None:
                for index in range(2000):
                    with pytest.raises(RunNotFoundError):
                        await aio.get_run(adb, f"rs_missing{index}")

            _, stall = await longest_stall(lookups())
            return stall

    stall = asyncio.run(scenario())
    assert stall < 0.02, f"event loop held {stall * 1000:.0f} ms"  # measured 35-40 ms


def test_the_wal_stays_bounded_under_sustained_inline_writes(path: Path) -> None:
    """PASSIVE checkpoints in a thread, while the loop keeps committing, never leave a fully
    checkpointed WAL to the next writer, so SQLite never restarts it: it grows ~33 kB a commit
    (sync with SQLite's autocheckpoint: 4.2 MB after 3,000; here 98 MB, 1 GB after 30,000)."""
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)
    db.close()

    async def scenario() -> float:
        async with AsyncDatabase(path) as adb:
            for _ in range(1500):
                await aio.record_progress(adb, run_id, "s", 1.0)
            return wal_mb(path)  # before close(): the last connection closed removes the WAL

    size = asyncio.run(scenario())
    assert size < 25, f"WAL {size:.0f} MB after 1,500 commits"  # measured 49 MB


def test_checkpoints_are_not_lost_when_each_asyncio_run_ends(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared AsyncDatabase used from one asyncio.run() per job: checkpoints run in a thread
    of their own, not in a task its loop would cancel, and a due one that could not start
    (one was running) starts after a later call."""
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)
    db.close()
    ran: list[int] = []
    checkpoint = inline.Checkpoints._checkpoint

    def counted(self: inline.Checkpoints) -> None:
        ran.append(1)
        checkpoint(self)

    monkeypatch.setattr(inline.Checkpoints, "_checkpoint", counted)
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 5)
    adb = AsyncDatabase(path)
    checkpoints = adb._checkpoints
    assert checkpoints is not None
    for _ in range(50):
        asyncio.run(aio.record_progress(adb, run_id, "s", 1.0))
        checkpoints.join()  # its loop is gone: the checkpoint still finishes
    asyncio.run(adb.close())
    assert len(ran) >= 10, f"{len(ran)} checkpoints for 50 commits, one due every 5"
    assert wal_mb(path) < 1.0


def test_a_large_payload_runs_in_a_thread(path: Path) -> None:
    """A 20 MB ``inputs`` is encoded and written outside SQLite's budget: it goes to a thread
    (where encoding it still holds the GIL, as it would for any sync caller)."""
    prompt = {"model_type": "transfer", "prompt_text": "p", "parameters": {}}
    big = {**prompt, "inputs": {"blob": "x" * 20_000_000}}
    many = {**prompt, "inputs": {str(key): key for key in range(inline.SMALL)}}
    assert not inline.is_small((big,), {})
    assert not inline.is_small((), {"data": {**prompt, "inputs": {"a": ["x" * 40_000] * 2}}})
    assert inline.is_small((many,), {})

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            statements = Statements(adb)
            await aio.create_prompt(adb, big)
            assert statements.seen
            assert LOOP not in statements.threads()

    asyncio.run(scenario())


def test_a_failed_checkpoint_is_logged_and_tried_again(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = DatabaseConnection(path)
    (run_id,) = pending_runs(db, 1)
    db.close()
    attempts: list[int] = []

    def failing(self: inline.Checkpoints) -> None:
        attempts.append(1)
        raise OSError("disk I/O error")

    monkeypatch.setattr(inline.Checkpoints, "_checkpoint", failing)
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 3)

    async def scenario() -> None:
        async with AsyncDatabase(path) as adb:
            checkpoints = adb._checkpoints
            assert checkpoints is not None
            for _ in range(5):
                await aio.record_progress(adb, run_id, "s", 1.0)
                checkpoints.join()

    asyncio.run(scenario())
    assert len(attempts) == 3  # due at the 3rd commit, and after each failure again
    assert "WAL checkpoint of the SQLite database failed: disk I/O error" in caplog.text
