"""One backend fixture used by every database test.

``db`` runs a test on SQLite in memory, a SQLite file, PostgreSQL and MariaDB. Server backends
that cannot be reached are skipped on a laptop (and listed at the end of the run), and fail the
run in CI (``CI=true`` or ``COSMOS_REQUIRE_BACKENDS=1``): a skipped backend never counts as passing.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import URL, delete

from cosmos_models import DatabaseConnection, Progress, Prompt, Run
from tests.backends import (
    ALL_BACKENDS,
    SERVER_BACKENDS,
    backends_required,
    server_database,
    server_reason,
)
from tests.sides import BOTH_SIDES, async_side, calls_a_service_function

# Property-based tests: a quick profile for `make test`, a thorough one for `make reliability`.
settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

_unreachable: dict[str, str] = {}
_checked: dict[str, str | None] = {}


def require_backend(backend: str) -> None:
    """Skip (laptop) or fail (CI) the current test if ``backend`` is a server that is down."""
    if backend not in SERVER_BACKENDS:
        return
    if backend not in _checked:
        _checked[backend] = server_reason(backend)
    reason = _checked[backend]
    if reason is None:
        return
    if backends_required():
        pytest.fail(f"backend required in CI but unavailable: {reason}", pytrace=False)
    _unreachable[backend] = reason
    pytest.skip(reason)


_server_dbs: dict[str, URL] = {}
_server_contexts: list[object] = []


def _session_server_url(backend: str) -> URL:
    if backend not in _server_dbs:
        context = server_database(backend)
        _server_dbs[backend] = context.__enter__()
        _server_contexts.append(context)
    return _server_dbs[backend]


SKIPPED_MARKER = ".skipped-backends"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The Makefile applies the coverage gate only when every backend ran (see `make test`).
    marker = session.config.rootpath / SKIPPED_MARKER
    if _unreachable:
        marker.write_text("".join(f"{name}\n" for name in sorted(_unreachable)))
    else:
        marker.unlink(missing_ok=True)
    for context in reversed(_server_contexts):
        context.__exit__(None, None, None)  # type: ignore[attr-defined]
    _server_contexts.clear()
    _server_dbs.clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unreachable:
        terminalreporter.section("backends skipped")
        for backend, reason in sorted(_unreachable.items()):
            terminalreporter.write_line(f"SKIPPED BACKEND {backend}: {reason}")
        terminalreporter.write_line(
            "Start the server(s) to run these tests; in CI they are required."
        )


def connect(backend: str, tmp_path: Path) -> DatabaseConnection:
    """A fresh connection to an empty schema on ``backend``."""
    require_backend(backend)
    if backend == "sqlite-memory":
        return DatabaseConnection(":memory:")
    if backend == "sqlite-file":
        return DatabaseConnection(tmp_path / "cosmos_test.db")
    return DatabaseConnection(_session_server_url(backend))


def _empty_tables(connection: DatabaseConnection) -> None:
    with connection.engine.begin() as conn:
        for table in (Progress, Run, Prompt):
            conn.execute(delete(table))  # type: ignore[arg-type]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The modules in BOTH_SIDES run their database tests that call a service function on the
    # sync side and on cosmos_models.aio (see tests/sides.py).
    if (
        metafunc.module.__name__ in BOTH_SIDES
        and "db" in metafunc.fixturenames
        and calls_a_service_function(metafunc.function)
    ):
        metafunc.parametrize("side", ["sync", "async"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The async side runs on SQLite in memory (a file takes the same thread path; what differs
    # on a file is in tests/test_aio*.py), PostgreSQL and MariaDB.
    dropped = [item for item in items if "[sqlite-file-async" in item.nodeid]
    if dropped:
        items[:] = [item for item in items if "[sqlite-file-async" not in item.nodeid]
        config.hook.pytest_deselected(items=dropped)


@pytest.fixture
def side(request: pytest.FixtureRequest) -> str:
    """Which side the service functions of the test run on: ``sync`` or ``async``."""
    return str(getattr(request, "param", "sync"))


@pytest.fixture
def db(
    backend: str, tmp_path: Path, side: str, request: pytest.FixtureRequest
) -> Iterator[DatabaseConnection]:
    """A connection with the schema in place, on each backend; leaves no rows behind. On the
    async side the test module's service functions call their ``cosmos_models.aio`` twins."""
    connection = connect(backend, tmp_path)
    try:
        connection.create_tables()
        if side == "async":
            with async_side(request.module):
                yield connection
        else:
            yield connection
    finally:
        if not connection._closed and backend in SERVER_BACKENDS:
            _empty_tables(connection)
        connection.close()
