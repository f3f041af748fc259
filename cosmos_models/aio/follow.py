"""The async ``follow_progress``: the sync follower's reads and cursor, with waits that never block.

``FollowState`` (``cosmos_models.services.follow``) owns what is read, the cursor and how long to
wait; its reads run as every other call does (``AsyncDatabase.run_sync``). Only the waiting is
this module's: PostgreSQL ``LISTEN`` on a psycopg ``AsyncConnection`` of its own (re-opened
with backoff when it drops), SQLite's ``PRAGMA data_version`` check run in a worker thread
between ``asyncio.sleep``s, and plain ``asyncio.sleep`` polling on MariaDB and in-memory SQLite.
"""

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.util import greenlet_spawn

from cosmos_models.aio.database import AsyncDatabase, sync_view
from cosmos_models.errors import DatabaseError
from cosmos_models.models.progress import ProgressRead
from cosmos_models.services.common import NOTIFY_CHANNEL
from cosmos_models.services.follow import FollowState, SQLiteWaiter, backoff_delays

T = TypeVar("T")


class _AsyncWaiter(Protocol):
    async def wait(self, seconds: float) -> set[str] | None:
        """As the sync waiters' ``wait``, without blocking the event loop."""

    async def close(self) -> None:
        """Release the waiter's own connection."""


class _PollWaiter:
    """No signal to wait for: sleep, then check every followed run."""

    async def wait(self, seconds: float) -> set[str] | None:
        await asyncio.sleep(seconds)
        return None

    async def close(self) -> None:
        return None


class _SQLiteWaiter:
    """The sync ``SQLiteWaiter``'s check, in a worker thread (a locked file must not stall the
    loop), every ``interval`` until ``seconds`` passed."""

    def __init__(self, check: SQLiteWaiter) -> None:
        self.check = check

    async def wait(self, seconds: float) -> set[str] | None:
        deadline = time.monotonic() + seconds
        while not await asyncio.to_thread(self.check.changed):
            left = deadline - time.monotonic()
            if left <= 0:
                return set()
            await asyncio.sleep(min(self.check.interval, left))
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self.check.close)


class _PostgresWaiter:
    """``LISTEN`` on a psycopg ``AsyncConnection`` taken from ``adb.engine`` (so with its options
    and secrets) and never returned to the pool; re-opened with backoff when it drops."""

    def __init__(self, adb: AsyncDatabase) -> None:
        self.engine = adb.engine.sync_engine
        self.raw: Any = None

    async def connect(self) -> None:
        """Open the listening connection; raises what connecting raises."""
        raw = await greenlet_spawn(self.engine.raw_connection)
        try:
            driver: Any = raw.driver_connection
            await driver.set_autocommit(True)
            await driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            await greenlet_spawn(raw.invalidate)
            raise
        self.raw = raw

    async def _drop(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            await greenlet_spawn(raw.invalidate)  # never back to the pool: it is LISTENing

    async def wait(self, seconds: float) -> set[str] | None:
        if self.raw is None:
            for pause in backoff_delays(time.monotonic() + seconds):
                try:
                    await self.connect()
                    break
                except Exception:  # the server is away: try again until the deadline
                    await asyncio.sleep(pause)
            return None  # back (notifications may have been missed) or not: check every run
        driver = self.raw.driver_connection
        try:
            woken = {n.payload async for n in driver.notifies(timeout=seconds, stop_after=1)}
            if not woken:
                return None  # the safety read
            woken.update([n.payload async for n in driver.notifies(timeout=0, stop_after=1000)])
        except Exception:  # psycopg.OperationalError and kin: the connection is gone
            await self._drop()
            return None
        return woken

    async def close(self) -> None:
        await self._drop()


async def _waiter(adb: AsyncDatabase, state: FollowState) -> _AsyncWaiter:
    db = state.db
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        waiter = _PostgresWaiter(adb)
        try:
            await waiter.connect()
        except sa_exc.TimeoutError:
            # Each follower LISTENs on a connection of its own from adb.engine's pool.
            raise DatabaseError(
                "follow_progress: no free connection to LISTEN on: every connection of the "
                "pool (pool_size + max_overflow) is held by other followers or calls; close "
                "some, or open the AsyncDatabase with a larger max_overflow"
            ) from None
        return waiter
    if dialect == "sqlite" and not db.is_memory:
        path = db.url.database or ""
        return _SQLiteWaiter(await asyncio.to_thread(SQLiteWaiter, path, state.interval))
    return _PollWaiter()


def follow_progress(
    adb: AsyncDatabase,
    run_ids: Collection[str] | None = None,
    *,
    after: Mapping[str, int] | None = None,
    poll_interval: float | None = None,
    idle_timeout: float | None = None,
) -> AsyncGenerator[ProgressRead, None]:
    """``async for event in aio.follow_progress(adb, …)``: the sync ``follow_progress``, async.

    The same arguments and semantics: events as they commit, in seq order per run, resumable
    after a ``{run_id: seq}`` cursor without a gap or a duplicate. The waits never block the
    event loop. Close it (``aclose()``, ``contextlib.aclosing``, or cancel the task iterating
    it) to release its connection. Raises ``ValueError`` naming a bad argument at the call,
    ``DatabaseError`` when reads keep failing.
    """
    state = FollowState(sync_view(adb), run_ids, after, poll_interval, idle_timeout)
    return _follow(adb, state)


async def _follow(adb: AsyncDatabase, state: FollowState) -> AsyncGenerator[ProgressRead, None]:
    waiter = await _waiter(adb, state)
    try:
        await _with_retries(lambda: adb.run_sync(lambda _: state.start()))
        while True:
            for event in await _with_retries(lambda: adb.run_sync(lambda _: state.read())):
                yield event
            seconds = state.next_wait()
            if seconds is None:
                return
            if seconds > 0:
                state.hint = await waiter.wait(seconds)
    finally:
        await waiter.close()


async def _with_retries(read: Callable[[], Awaitable[T]]) -> T:
    """Await a read, retrying with the sync side's backoff while the database is away."""
    for pause in backoff_delays():
        try:
            return await read()
        except DatabaseError:
            await asyncio.sleep(pause)
    return await read()
