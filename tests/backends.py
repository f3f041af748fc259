"""Throw-away databases on each backend, for the tests and the benchmarks.

Server URLs come from ``COSMOS_TEST_POSTGRES_URL`` and ``COSMOS_TEST_MYSQL_URL`` (admin URLs of a
server where databases may be created); defaults match the local services of the dev machines.
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "COSMOS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get(
    "COSMOS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)

SERVER_BACKENDS = ("postgresql", "mariadb")
ALL_BACKENDS = ("sqlite-memory", "sqlite-file", "postgresql", "mariadb")


def backends_required() -> bool:
    """True in CI (or when asked): a server backend that cannot be reached is a failure."""
    flag = os.environ.get("COSMOS_REQUIRE_BACKENDS", os.environ.get("CI", ""))
    return flag.strip().lower() in {"1", "true", "yes"}


def admin_url(backend: str) -> URL:
    return make_url(POSTGRES_ADMIN_URL if backend == "postgresql" else MYSQL_ADMIN_URL)


def server_reason(backend: str) -> str | None:
    """None if the server answers, else why not (without any password)."""
    engine = create_engine(admin_url(backend), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"{backend} not reachable at {admin_url(backend).render_as_string()}: " + (
            type(exc).__name__
        )
    finally:
        engine.dispose()
    return None


@dataclass
class ThrowawayDatabase:
    backend: str
    url: URL


@contextmanager
def server_database(backend: str) -> Iterator[URL]:
    """Create an empty database on a server backend, yield its URL, drop it afterwards."""
    name = f"cosmos_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = admin_url(backend)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                connection.execute(
                    text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                )
        yield admin.set(database=name)
    finally:
        with engine.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()


def sqlite_file_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'cosmos_test.db'}"
