"""Running the same test bodies on the sync side and on ``cosmos_models.aio``.

A test module listed in ``BOTH_SIDES`` runs each of its database tests that calls a service
function twice: as written, and with every service function it imported replaced by a caller
of the async twin (``asyncio`` on one event loop per test, an ``AsyncDatabase`` on the same
database as the test's ``db``). The test bodies stay the plain sync code; what they assert then
holds for the async side too: results, database effects and the exception types.
"""

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import cosmos_models
from cosmos_models import DatabaseConnection, aio

BOTH_SIDES = frozenset(
    {
        "tests.test_arguments",
        "tests.test_editing",
        "tests.test_batch_transitions",
        "tests.test_follow",
        "tests.test_handoff",
        "tests.test_lifecycle",
        "tests.test_queries",
        "tests.test_tracking",
    }
)

# Every name of ``cosmos_models.aio`` that twins a sync function of the same name.
TWINS = {
    name: getattr(aio, name)
    for name in aio.__all__
    if name in cosmos_models.__all__ and callable(getattr(cosmos_models, name))
}
TWINS.pop("init_database")  # opens a database: not something a test body calls on ``db``


def calls_a_service_function(function: Callable[..., Any]) -> bool:
    """True if the test's code names a function that has an async twin."""
    return bool(set(function.__code__.co_names) & set(TWINS))


class _SyncIterator:
    """A sync generator's face on an async one: ``next``, ``close``, iteration."""

    def __init__(self, side: "AsyncSide", events: AsyncIterator[Any]) -> None:
        self.side = side
        self.events = events

    def __iter__(self) -> "_SyncIterator":
        return self

    def __next__(self) -> Any:
        try:
            return self.side.run(anext(self.events))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self.side.run(self.events.aclose())  # type: ignore[attr-defined]


class AsyncSide:
    """One event loop per thread and the ``AsyncDatabase`` of each connection a test uses."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._opened: list[tuple[asyncio.Runner, dict[int, aio.AsyncDatabase]]] = []
        self.calls = 0

    def _loop(self) -> tuple[asyncio.Runner, dict[int, aio.AsyncDatabase]]:
        if not hasattr(self._local, "runner"):
            self._local.runner = asyncio.Runner()
            self._local.databases = {}
            self._opened.append((self._local.runner, self._local.databases))
        return self._local.runner, self._local.databases

    def run(self, awaitable: Any) -> Any:
        runner, _ = self._loop()
        return runner.run(awaitable)

    def database(self, db: Any) -> Any:
        """The ``AsyncDatabase`` twin of ``db`` (anything else is passed on, to be refused)."""
        if not isinstance(db, DatabaseConnection):
            return db
        _, databases = self._loop()
        adb = databases.get(id(db))
        if adb is None:
            # The memory database is a private file: the twin opens that same file.
            location = db.engine.url if db.is_memory else db.url
            adb = databases[id(db)] = aio.AsyncDatabase(location, read_only=db.read_only)
        if db._closed and not adb.closed:
            self.run(adb.close())
        return adb

    def twin_caller(self, name: str) -> Callable[..., Any]:
        twin = TWINS[name]
        sync = getattr(cosmos_models, name)

        @functools.wraps(sync)
        def call(db: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if name == "follow_progress":
                return _SyncIterator(self, twin(self.database(db), *args, **kwargs))
            return self.run(twin(self.database(db), *args, **kwargs))

        return call

    def close(self) -> None:
        for runner, databases in self._opened:
            for adb in databases.values():
                runner.run(adb.close())
            runner.close()


@contextmanager
def async_side(module: ModuleType) -> Iterator[None]:
    """Replace the service functions ``module`` imported by callers of their async twins."""
    side = AsyncSide()
    replaced = {
        name: value
        for name, value in vars(module).items()
        if name in TWINS and value is getattr(cosmos_models, name)
    }
    try:
        for name in replaced:
            setattr(module, name, side.twin_caller(name))
        yield
        # A test run "on the async side" that never reached a twin would prove nothing.
        assert side.calls > 0, f"no async twin was called (replaced: {sorted(replaced)})"
    finally:
        for name, value in replaced.items():
            setattr(module, name, value)
        side.close()
