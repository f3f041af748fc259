"""Reliability: killed migrations, a full disk, and resources left behind by connections."""

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cosmos_models import DatabaseConnection, DatabaseError, Prompt, init_database
from cosmos_models.db.migrate import upgrade
from cosmos_models.db.revisions import head_revision
from tests.backends import backends_required, server_database
from tests.conftest import require_backend
from tests.factories import make_prompt
from tests.legacy_fixtures import make_legacy_sqlite

pytestmark = pytest.mark.reliability


def integrity(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def count(path: Path, table: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        connection.close()


def big_legacy(path: Path, progress_rows: int) -> Path:
    make_legacy_sqlite(path)
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO progress VALUES (?, 'rs_20250104_120500_aaa111', "
            "'2025-01-04 12:30:00.000000', 'inference', 50.0, 'filler')",
            ((i,) for i in range(100, 100 + progress_rows)),
        )
    connection.close()
    return path


MIGRATE = "import sys; from cosmos_models.db.migrate import upgrade; upgrade(sys.argv[1])"


def test_migration_killed_midway_leaves_file_or_backup_intact(tmp_path: Path) -> None:
    path = big_legacy(tmp_path / "legacy.db", progress_rows=300_000)
    rows_before = count(path, "progress")
    process = subprocess.Popen([sys.executable, "-c", MIGRATE, str(path)])
    journal = Path(f"{path}-journal")
    deadline = time.monotonic() + 60
    # Kill once the migration transaction is writing (its rollback journal exists).
    while not journal.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.002)
    assert process.poll() is None, "the migration finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    backups = list(tmp_path.glob("legacy.backup-legacy-*.db"))
    assert len(backups) == 1
    assert integrity(backups[0]) == "ok"
    assert count(backups[0], "progress") == rows_before
    # Rerunning the migration first thing: the hot journal is rolled back, the file is whole,
    # and the adoption runs to the end.
    result = upgrade(path)
    assert result.after == head_revision()
    assert result.adoption.copied["progress"] == rows_before - 1  # the sample's one orphan
    assert integrity(path) == "ok"


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _server_connections(backend: str, database: str) -> int:
    with DatabaseConnection(database) as probe, probe.engine.connect() as connection:
        name = probe.url.database
        if backend == "postgresql":
            query = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
        else:
            query = "SELECT COUNT(*) FROM information_schema.processlist WHERE db = :name AND id <> CONNECTION_ID()"
        return int(connection.execute(text(query), {"name": name}).scalar_one())


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql", "mariadb"])
def test_open_use_close_cycles_leave_nothing_behind(backend: str, tmp_path: Path) -> None:
    require_backend(backend)
    cycles = int(os.environ.get("COSMOS_RELIABILITY_CYCLES", "200"))

    def run(url: str) -> None:
        init_database(url).close()
        gc.collect()
        fds, threads = _fd_count(), threading.active_count()
        servers = None if backend == "sqlite-file" else _server_connections(backend, url)
        for index in range(cycles):
            connection = DatabaseConnection(url)
            with connection.get_session() as session:
                if index % 10 == 0:
                    session.add(make_prompt())
                session.scalar(select(func.count()).select_from(Prompt))
            connection.close()
        gc.collect()
        assert _fd_count() <= fds
        assert threading.active_count() <= threads
        if servers is not None:
            assert _server_connections(backend, url) <= servers
        with DatabaseConnection(url) as connection, connection.get_session() as session:
            assert session.scalar(select(func.count()).select_from(Prompt)) == cycles // 10

    if backend == "sqlite-file":
        run(str(tmp_path / "cycles.db"))
    else:
        with server_database(backend) as url:
            run(url.render_as_string(hide_password=False))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here: {result.stderr.decode().strip()}"
        if backends_required():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_a_clear_error_and_loses_no_committed_row(tiny_disk: Path) -> None:
    path = tiny_disk / "full.db"
    committed = 0
    with init_database(path) as database:
        with pytest.raises(DatabaseError, match=r"(?i)full") as caught:
            for batch in range(10_000):
                with database.get_session() as session:
                    session.add_all(
                        make_prompt(id=f"ps_{batch}_{i}", prompt_text="x" * 2000) for i in range(5)
                    )
                committed += 5
        assert "Traceback" not in str(caught.value)
    assert committed > 0
    with DatabaseConnection(path) as database, database.get_session(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(Prompt)) == committed
    assert integrity(path) == "ok"
