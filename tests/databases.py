"""Brand-new databases of their own (not the shared ``db`` fixture's), for migration-level tests."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.backends import server_database
from tests.conftest import require_backend

# SQLite in memory lives in one connection's process space: a URL cannot name it twice.
URL_BACKENDS = ("sqlite-file", "postgresql", "mariadb")


@contextmanager
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL (password included) of an empty database made for one test, dropped after it."""
    require_backend(backend)
    if backend == "sqlite-file":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with server_database(backend) as url:
        yield url.render_as_string(hide_password=False)
