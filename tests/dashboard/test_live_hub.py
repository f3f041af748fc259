"""The hub behind ``/events``: keep-alives, slow clients, a database that is away, shutdown."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from cosmos_models import DatabaseConnection, create_run
from cosmos_models.aio import AsyncDatabase
from cosmos_models.api import live
from cosmos_models.api.live import LiveHub
from cosmos_models.errors import DatabaseError
from cosmos_models.services.run_feed import FeedChanges, RunFeed
from tests.dashboard.data import add_prompt


async def _next(stream: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(stream), 5)


def _add_run(db: DatabaseConnection) -> str:
    return create_run(db, {"prompt_id": add_prompt(db)}).id


def test_idle_stream_sends_keep_alives_and_close_ends_it(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "KEEP_ALIVE_SECONDS", 0.05)

    async def scenario() -> None:
        database = AsyncDatabase(db.url)
        hub = LiveHub(database, interval=0.02, stats_interval=3600)
        stream = hub.stream()
        assert (await _next(stream)).startswith("event: snapshot\ndata: []")
        assert (await _next(stream)).startswith("event: stats")
        assert await _next(stream) == ": keep-alive\n\n"
        await hub.close()
        await database.close()
        with pytest.raises(StopAsyncIteration):
            await _next(stream)
        assert hub._task is None

    asyncio.run(scenario())


def test_a_client_too_slow_is_disconnected_others_go_on(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "CLIENT_QUEUE", 2)

    async def scenario() -> None:
        database = AsyncDatabase(db.url)
        hub = LiveHub(database, interval=0.01, stats_interval=0)  # a stats message every read
        slow, fast = hub.stream(), hub.stream()
        await _next(slow)
        await _next(fast)
        for _ in range(6):
            assert (await _next(fast)).startswith("event: stats")
        # The slow one's backlog was dropped: its stream ends, the browser reconnects.
        with pytest.raises(StopAsyncIteration):
            await _next(slow)
        await fast.aclose()
        await asyncio.sleep(0.05)
        assert hub._task is None  # no client left: polling stopped
        await database.close()

    asyncio.run(scenario())


def test_failed_reads_keep_the_clients(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _add_run(db)
    failures = iter([DatabaseError("server closed the connection"), RuntimeError("a bug")])
    real = RunFeed.changes

    def flaky(feed: RunFeed) -> FeedChanges:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(feed)

    monkeypatch.setattr(RunFeed, "changes", flaky)

    async def scenario() -> None:
        database = AsyncDatabase(db.url)
        hub = LiveHub(database, interval=0.01, stats_interval=3600, retry_after=0.01)
        stream = hub.stream()
        assert run_id in await asyncio.wait_for(anext(stream), 5)
        await hub.close()
        assert "run feed failed to read" in caplog.text  # the unexpected one is logged
        await database.close()

    asyncio.run(scenario())
