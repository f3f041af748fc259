"""cosmos_models.aio: the twins' table, AsyncDatabase itself, and an event loop that never stalls.

The behaviour of each twin is tested by running the sync test bodies on the async side (see
tests/sides.py); here is what only the async side has.
"""

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import cosmos_models
from cosmos_models import DatabaseConnection, RunNotFoundError, aio
from cosmos_models.aio import AsyncDatabase
from cosmos_models.db.connection import ConnectionOptions
from cosmos_models.errors import DatabaseError
from tests.factories import pending_runs

# Functions of ``cosmos_models`` that take no database, and the class itself: no twin needed.
NOT_SERVICES = {
    "get_database_url",
    "api_json_schemas",
    "DatabaseConnection",
    "JsonFilter",
    "app_metadata",  # an app's tables: MetaData work, no database
    "app_tables",
    "include_app_object",
}


def service_functions() -> set[str]:
    return {
        name
        for name in cosmos_models.__all__
        if inspect.isfunction(getattr(cosmos_models, name)) and name not in NOT_SERVICES
    }


def test_every_service_function_has_a_twin_with_its_signature_and_docstring() -> None:
    assert service_functions() <= set(aio.__all__)
    for name in service_functions() - {"init_database", "follow_progress"}:
        sync, twin = getattr(cosmos_models, name), getattr(aio, name)
        assert inspect.iscoroutinefunction(twin), name
        assert twin.__doc__ == sync.__doc__, name
        assert inspect.signature(twin) == inspect.signature(sync), name
    assert set(aio.__all__) == {name for name in dir(aio) if not name.startswith("_")} - {
        "database",
        "follow",
        "inline",
        "threads",
        "twins",
    }


def test_async_database_takes_the_options_of_database_connection() -> None:
    keyword_only = [
        name
        for name, parameter in inspect.signature(DatabaseConnection).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keyword_only == list(ConnectionOptions.__annotations__)


def run(awaitable: Awaitable[Any]) -> Any:
    return asyncio.run(awaitable)  # type: ignore[arg-type]


def test_repr_masks_the_password_and_refuses_what_the_sync_side_refuses() -> None:
    adb = AsyncDatabase("postgresql://app:s3cr3t@db.invalid/cosmos?sslpassword=hush")
    try:
        assert "s3cr3t" not in repr(adb)
        assert "hush" not in repr(adb)
        assert "s3cr3t" not in repr(adb.url)
        assert repr(adb).startswith("AsyncDatabase('postgresql+psycopg://app:***@db.invalid")
        assert adb.engine.dialect.is_async
    finally:
        run(adb.close())
    assert "closed" in repr(adb)
    with pytest.raises(ValueError, match="location"):
        AsyncDatabase("nosuch://x")
    with pytest.raises(ValueError, match="pool_size"):
        AsyncDatabase(":memory:", pool_size=0)
    with pytest.raises(ValueError, match="database_url"):
        run(aio.init_database("nosuch://x"))


@pytest.mark.parametrize(
    ("spelling", "driver"),
    [
        ("sqlite+aiosqlite:///{path}", "sqlite+aiosqlite"),
        ("sqlite:///{path}", "sqlite+aiosqlite"),
        ("postgresql+psycopg_async://u@h/d", "postgresql+psycopg"),
        ("mysql+aiomysql://u@h/d", "mysql+asyncmy"),
        ("mariadb+asyncmy://u@h/d", "mariadb+asyncmy"),
    ],
)
def test_sync_and_async_spellings_name_the_same_database(
    spelling: str, driver: str, tmp_path: Path
) -> None:
    location = spelling.format(path=tmp_path / "x.db")
    adb = AsyncDatabase(location)
    sync = DatabaseConnection(location)
    try:
        assert adb.url.drivername == driver
        assert adb.sync_db.url == sync.url  # one parse, one database
    finally:
        sync.close()
        run(adb.close())


def test_init_database_migrates_and_errors_are_those_of_the_sync_side(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await aio.init_database(tmp_path / "a.db") as adb:
            with pytest.raises(RunNotFoundError, match="rs_missing"):
                await aio.get_run(adb, "rs_missing")
            with pytest.raises(ValueError, match="db: must be an AsyncDatabase"):
                await aio.get_run(DatabaseConnection(":memory:"), "rs_x")  # type: ignore[arg-type]
            assert await adb.run_sync(lambda db: db.is_sqlite)
        with pytest.raises(RuntimeError, match="closed"):
            await aio.get_run(adb, "rs_x")
        async with AsyncDatabase(tmp_path / "b.db") as bare:  # not migrated
            with pytest.raises(DatabaseError, match="not migrated"):
                await aio.get_run(bare, "rs_x")
        async with AsyncDatabase(tmp_path / "a.db", read_only=True) as reader:
            assert reader.read_only
            with pytest.raises(DatabaseError, match="read-only"):
                await aio.create_prompt(
                    reader, {"model_type": "m", "prompt_text": "t", "inputs": {}, "parameters": {}}
                )

    run(scenario())


def test_server_down_is_a_database_error_without_the_password() -> None:
    async def scenario() -> None:
        async with AsyncDatabase("postgresql://app:s3cr3t@127.0.0.1:1/cosmos") as adb:
            with pytest.raises(DatabaseError, match="cannot connect") as caught:
                await aio.get_run(adb, "rs_x")
            assert "s3cr3t" not in str(caught.value)

    run(scenario())


async def ticking_while(work: Awaitable[Any], period: float = 0.01) -> tuple[Any, int]:
    """Await ``work`` beside a ticker; return its result and how often the ticker ticked."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(period)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        stop.set()
        await task


def hold_lock_briefly(db: DatabaseConnection, seconds: float) -> Callable[[], float]:
    """Lock the runs table from another connection for ``seconds`` (started at once); return
    a join function, which gives the ``time.monotonic()`` at which the lock began to be let go
    (nothing waiting for it can have finished before that moment)."""
    started = threading.Event()
    released: list[float] = []

    def hold() -> None:
        dialect = db.engine.dialect.name
        with db.begin() as connection:  # on SQLite: BEGIN IMMEDIATE, the write lock
            if dialect == "postgresql":
                connection.execute(text("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE"))
            elif dialect != "sqlite":
                connection.execute(text("LOCK TABLES runs WRITE"))
            started.set()
            time.sleep(seconds)
            released.append(time.monotonic())
            if dialect not in ("sqlite", "postgresql"):
                connection.execute(text("UNLOCK TABLES"))

    thread = threading.Thread(target=hold)
    thread.start()
    started.wait(10)

    def join() -> float:
        thread.join(10)
        return released[0]

    return join


def adb_for(db: DatabaseConnection) -> AsyncDatabase:
    return AsyncDatabase(db.engine.url if db.is_memory else db.url)


def test_a_claim_waiting_for_a_lock_does_not_block_the_event_loop(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)

    async def scenario() -> None:
        async with adb_for(db) as adb:
            await aio.get_run(adb, run_id)  # connected before the lock is taken
            join = hold_lock_briefly(db, 0.4)
            claimed, ticks = await ticking_while(aio.claim_next_run(adb, "w"))
            finished = time.monotonic()
            released = join()
            assert claimed is not None
            assert claimed.id == run_id
            # It did wait for the lock (whatever the machine's load: no duration is assumed) …
            assert finished >= released
            assert ticks >= 5  # … while the loop kept running

    run(scenario())


def test_the_async_engine_has_the_sync_engines_listeners(db: DatabaseConnection) -> None:
    async def scenario() -> None:
        async with adb_for(db) as adb:
            async with adb.engine.connect() as connection:
                if db.is_sqlite:  # the connect listener ran on the aiosqlite connection too
                    pragma = await connection.exec_driver_sql("PRAGMA foreign_keys")
                    assert pragma.scalar_one() == 1
                count = await connection.execute(text("SELECT COUNT(*) FROM runs"))
                assert count.scalar_one() == 0
            assert adb.engine is adb.engine  # made once

    run(scenario())


def test_the_readme_async_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_readme import section_code

    monkeypatch.setenv("COSMOS_DATABASE_URL", str(tmp_path / "readme.db"))
    exec(compile(section_code("Async"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "1 inference 50.0"
    assert printed[1:] == ["uploading transfer 50.0"]


def test_a_failed_init_closes_what_it_opened(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)

    async def scenario() -> None:
        with pytest.raises(cosmos_models.CosmosModelsError, match="not a database"):
            await aio.init_database(garbage)

    run(scenario())
    # MariaDB's calls run over the async driver: the connection they run on says so, masked.
    adb = AsyncDatabase("mariadb://app:s3cr3t@db.invalid/cosmos")
    assert repr(adb.sync_db).startswith("AsyncBackedConnection('mariadb+asyncmy://app:***@")
    run(adb.close())
    # PostgreSQL's run in threads over the sync driver; its async engine is made when asked for.
    adb = AsyncDatabase("postgresql://app:s3cr3t@db.invalid/cosmos")
    assert repr(adb.sync_db).startswith("DatabaseConnection('postgresql+psycopg://app:***@")
    assert adb.engine.dialect.is_async
    assert "s3cr3t" not in repr(adb.engine.url)
    run(adb.close())


@pytest.mark.parametrize("location", ["memory", "file"])
def test_concurrent_closes_all_return_once_it_is_closed(location: str, tmp_path: Path) -> None:
    # Both passed "not closed" and the slower one then found the database closed.
    where = ":memory:" if location == "memory" else str(tmp_path / "close.db")

    async def scenario() -> list[Any]:
        adb = await aio.init_database(where)
        results = await asyncio.gather(*(adb.close() for _ in range(5)), return_exceptions=True)
        assert adb.closed
        await adb.close()  # and later still
        return results

    assert asyncio.run(scenario()) == [None] * 5


def test_a_close_cut_short_at_the_loops_teardown_can_be_made_again(tmp_path: Path) -> None:
    # asyncio.run cancels what is left at its end, the close too: that cancelled close stayed
    # the answer of every later close(), and the database was never closed.
    where = str(tmp_path / "teardown.db")
    adb = asyncio.run(aio.init_database(where))

    left: list[asyncio.Future[None]] = []

    async def leave_a_close_running() -> None:
        left.append(asyncio.ensure_future(adb.close()))

    asyncio.run(leave_a_close_running())
    assert left[0].cancelled()
    asyncio.run(adb.close())
    assert adb.closed
