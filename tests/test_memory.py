"""Sessions nest and readers see the committed state beside a writer, ``:memory:`` included."""

import gc
import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cosmos_models import DatabaseConnection, Prompt
from cosmos_models.db import connection as connection_module
from tests.factories import make_prompt

# Long enough never to be reached when things work; a regression fails instead of hanging.
WAIT_S = 10


def prompt_count(db: DatabaseConnection) -> int:
    with db.get_session(read_only=True) as session:
        return int(session.scalar(select(func.count()).select_from(Prompt)) or 0)


def test_nested_sessions_work_as_on_a_file(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        session.add(make_prompt(id="ps_committed"))
    with db.get_session() as outer:
        outer.add(make_prompt(id="ps_outer"))
        outer.flush()
        with db.get_session(read_only=True) as inner:
            # The outer session's write is not committed yet: the inner one does not see it.
            assert inner.scalars(select(Prompt.id)).all() == ["ps_committed"]
    with db.get_session(read_only=True) as outer:
        assert len(outer.scalars(select(Prompt.id)).all()) == 2
        with db.get_session() as inner:
            inner.add(make_prompt(id="ps_inner"))
    assert prompt_count(db) == 3


def test_a_reader_sees_the_committed_state_while_a_writer_works(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        session.add(make_prompt(id="ps_committed"))
    written, read_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with db.get_session() as session:
                session.add(make_prompt(id="ps_uncommitted"))
                session.flush()
                written.set()
                # The write stays uncommitted until the reader has finished.
                assert read_done.wait(WAIT_S), "the reader did not finish beside the writer"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            written.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert written.wait(WAIT_S)
        with db.get_session(read_only=True) as session:
            seen = session.scalars(select(Prompt.id)).all()
        read_done.set()
    finally:
        read_done.set()
        writer.join()
    assert errors == []
    assert seen == ["ps_committed"]
    assert prompt_count(db) == 2


def test_memory_databases_are_private_files_removed_on_close() -> None:
    db = DatabaseConnection(":memory:", sqlite_wal=False)
    directory = db._memory_dir
    assert directory is not None
    # Still a memory database for callers: no backups, no path, the same URL.
    assert db.is_memory
    assert db.is_sqlite
    assert db.url.render_as_string() == "sqlite://"
    if os.access(connection_module.MEMORY_FILESYSTEM, os.W_OK):
        assert directory.parent == connection_module.MEMORY_FILESYSTEM
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    with db.get_session() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    assert {p.name for p in directory.iterdir()} >= {"memory.db", "memory.db-wal"}
    db.close()
    assert not directory.exists()
    db.close()  # a second close is harmless


def test_two_memory_databases_are_independent() -> None:
    with DatabaseConnection(":memory:") as first, DatabaseConnection(":memory:") as second:
        first.create_tables()
        second.create_tables()
        with first.get_session() as session:
            session.add(make_prompt(id="ps_first"))
        assert (prompt_count(first), prompt_count(second)) == (1, 0)
        assert first._memory_dir != second._memory_dir


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_file_or_descriptor_leaks_over_200_cycles() -> None:
    gc.collect()
    before = open_fds()
    directories = []
    for index in range(200):
        db = DatabaseConnection(":memory:")
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with db.get_session() as session:
            session.execute(text("INSERT INTO t VALUES (:x)"), {"x": index})
        directories.append(db._memory_dir)
        db.close()
    gc.collect()
    assert [d for d in directories if d is None or d.exists()] == []
    assert open_fds() <= before


def test_an_unclosed_memory_database_is_removed_when_collected() -> None:
    db = DatabaseConnection(":memory:")
    with db.get_session() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    directory = db._memory_dir
    assert directory is not None
    assert directory.exists()
    del db, session
    gc.collect()
    assert not directory.exists()


def test_an_unclosed_memory_database_is_removed_at_interpreter_exit() -> None:
    script = (
        "from cosmos_models import DatabaseConnection\n"
        "db = DatabaseConnection(':memory:')\n"
        "db.create_tables()\n"
        "print(db._memory_dir)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    directory = Path(result.stdout.strip())
    assert directory.name.startswith("cosmos-memory-")
    assert not directory.exists()


def test_memory_databases_use_the_temp_directory_without_a_memory_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "MEMORY_FILESYSTEM", tmp_path / "no-shm")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with DatabaseConnection(":memory:") as db:
        db.create_tables()
        assert db._memory_dir is not None
        assert db._memory_dir.parent == tmp_path
        assert prompt_count(db) == 0
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_leaves_the_parents_memory_database_alone() -> None:
    with DatabaseConnection(":memory:") as db:
        db.create_tables()
        directory = db._memory_dir
        assert directory is not None
        assert db._remove_memory_dir is not None
        pid = os.fork()
        if pid == 0:  # the child: its copy's finalizer runs, as at its exit or collection
            try:
                db._remove_memory_dir()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert directory.exists()
        assert prompt_count(db) == 0
    assert not directory.exists()
