"""The connection layer: locations, sessions, SQLite settings, secrets."""

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    IntegrityViolation,
    MigrationError,
    Prompt,
    delete_run,
    get_database_url,
    get_prompt,
    init_database,
    list_prompts,
    transition,
)
from cosmos_models.db.locations import ENV_VAR, parse_location
from tests.factories import make_prompt, new_prompt

# -- locations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "",
        "   ",
        "\t\n",
        "../../../etc/passwd",
        "/some/path/../../../etc",
        "data/..",
        "..\\windows\\system32",
        "/some/%2e%2e/etc/db.sqlite",
        "/some/%252e%252e/etc/db.sqlite",
        "sqlite:///../escape.db",
        "sqlite:////tmp/a/../../etc/x.db",
        "sqlite:///%2E%2E/escape.db",
        "/tmp/nul\x00byte.db",
        "sqlite:///tmp/nul%00byte.db",
        "postgresql+psycopg://u:p@h/../x",
        "oracle://scott:tiger@host/db",
        "mongodb://localhost/db",
    ],
)
def test_bad_locations_are_refused(location: str) -> None:
    with pytest.raises(ValueError) as caught:
        DatabaseConnection(location)
    assert "tiger" not in str(caught.value)


def test_non_string_location_is_refused() -> None:
    with pytest.raises(ValueError, match="str or path"):
        DatabaseConnection(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (":memory:", "sqlite://"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite://"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://u@h/db", "mysql+pymysql://u@h/db"),
        ("mariadb://u@h/db", "mariadb+pymysql://u@h/db"),
    ],
)
def test_good_locations_are_normalised(location: str, expected: str) -> None:
    assert parse_location(location).render_as_string() == expected


def test_file_paths_become_absolute_sqlite_urls(tmp_path: Path) -> None:
    url = parse_location(tmp_path / "x.db")
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "x.db")
    assert Path(parse_location("rel/x.db").database or "").is_absolute()
    assert parse_location("/valid/path/database.db").database == "/valid/path/database.db"
    # '...' and names that merely contain '..' are ordinary names
    assert parse_location("/data/v1..2/db.sqlite").database == "/data/v1..2/db.sqlite"


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "%2e%2e", "%2E.", "x..y"]), min_size=1))
def test_traversal_is_refused_in_any_position(parts: list[str]) -> None:
    path = "/" + "/".join(parts) + "/db.sqlite"
    traversal = any(p in ("..", "%2e%2e", "%2E.") for p in parts)
    for candidate in (path, f"sqlite:///{path}"):
        if traversal:
            with pytest.raises(ValueError, match=r"\.\."):
                parse_location(candidate)
        else:
            parse_location(candidate)


# -- environment ----------------------------------------------------------------------------


def test_default_url_is_the_absolute_outputs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    url = get_database_url()
    assert Path(url).is_absolute()
    assert url.endswith(str(Path("outputs") / "cosmos_workflow.db"))


@pytest.mark.parametrize("value", ["/custom/path/cosmos.db", ":memory:", "sqlite:///x.db"])
def test_env_url_is_returned_unchanged(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    assert get_database_url() == value


@pytest.mark.parametrize("value", ["", "  ", "../x.db", "ftp://user:hunter2@host/x"])
def test_invalid_env_url_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=ENV_VAR) as caught:
        get_database_url()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match=ENV_VAR):
        DatabaseConnection()


def test_connection_without_location_uses_the_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.db"))
    with init_database() as connection:
        assert connection.url.database == str(tmp_path / "env.db")
    assert (tmp_path / "env.db").exists()


# -- sessions -------------------------------------------------------------------------------


def test_session_commits_on_success_and_rolls_back_on_error(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        session.add(make_prompt(id="ps_kept"))
    with pytest.raises(RuntimeError, match="boom"), db.get_session() as session:
        session.add(make_prompt(id="ps_lost"))
        session.flush()
        raise RuntimeError("boom")
    with db.get_session(read_only=True) as session:
        assert session.scalars(select(Prompt.id)).all() == ["ps_kept"]


def test_closed_connection_refuses_sessions(tmp_path: Path) -> None:
    connection = init_database(tmp_path / "c.db")
    connection.close()
    connection.close()  # idempotent
    with pytest.raises(RuntimeError, match="Connection is closed"), connection.get_session():
        pass
    with pytest.raises(RuntimeError, match="Connection is closed"):
        connection.create_tables()
    assert "closed" in repr(connection)


def test_memory_database_lives_across_sessions_and_threads() -> None:
    with init_database(":memory:") as connection:
        with connection.get_session() as session:
            session.add(make_prompt(id="ps_main"))

        def add(index: int) -> None:
            with connection.get_session() as session:
                session.add(make_prompt(id=f"ps_thread_{index}"))

        threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with connection.get_session() as session:
            assert len(session.scalars(select(Prompt.id)).all()) == 9


def test_nested_sessions_on_memory_work() -> None:
    with init_database(":memory:") as connection, connection.get_session() as outer:
        with connection.get_session() as inner:
            inner.add(make_prompt(id="ps_inner"))
        assert outer.get(Prompt, "ps_inner") is not None


def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cosmos.db"
    with init_database(path) as connection:
        assert path.exists()
        with connection.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000


def test_foreign_keys_are_on_for_every_pooled_connection(tmp_path: Path) -> None:
    with init_database(tmp_path / "fk.db") as connection:
        conns = [connection.engine.connect() for _ in range(4)]
        try:
            assert [c.exec_driver_sql("PRAGMA foreign_keys").scalar_one() for c in conns] == [1] * 4
        finally:
            for c in conns:
                c.close()


def test_concurrent_writers_and_a_reader_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    init_database(path).close()
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        with DatabaseConnection(path) as connection:
            for index in range(25):
                try:
                    with connection.get_session() as session:
                        # read, then write: the pattern that fails under deferred transactions
                        session.scalars(select(Prompt.id).limit(1)).all()
                        session.add(make_prompt(id=f"ps_{worker}_{index}"))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

    def read() -> None:
        with DatabaseConnection(path) as connection:
            while not stop.is_set():
                with connection.get_session(read_only=True) as session:
                    session.scalars(select(Prompt.id)).all()

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert errors == []
    with DatabaseConnection(path) as connection, connection.get_session() as session:
        assert len(session.scalars(select(Prompt.id)).all()) == 150


# -- secrets --------------------------------------------------------------------------------

SECRET = "s3cr3t-P@ss"
SECRET_URL = "postgresql+psycopg://cosmos:s3cr3t-P%40ss@127.0.0.1:1/cosmos"


def test_password_never_in_repr_or_str() -> None:
    connection = DatabaseConnection(SECRET_URL)
    for text_form in (repr(connection), str(connection), str(connection.engine.url)):
        assert SECRET not in text_form
        assert "s3cr3t" not in text_form
    connection.close()


def test_password_never_in_driver_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with DatabaseConnection(SECRET_URL, echo=True) as connection:
        with pytest.raises(DatabaseError) as caught, connection.get_session() as session:
            session.execute(text("SELECT 1"))
        assert "s3cr3t" not in str(caught.value)
        assert caught.value.__cause__ is None
        with pytest.raises(MigrationError) as migration_error:
            connection.create_tables()
        assert "s3cr3t" not in str(migration_error.value)
    assert "s3cr3t" not in caplog.text


def test_redaction_covers_encoded_forms() -> None:
    from cosmos_models.db.locations import redact

    url = parse_location(SECRET_URL)
    assert redact(f"a {SECRET} b s3cr3t-P%40ss c", url) == "a *** b *** c"
    assert redact("nothing", parse_location(":memory:")) == "nothing"


# -- WAL switch under another connection's write lock -------------------------------------


def _migrated_journal_file(tmp_path: Path) -> Path:
    from cosmos_models.db.migrate import upgrade

    path = tmp_path / "fresh.db"
    upgrade(path, backup=False)  # migrations leave the file in rollback-journal mode
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    return path


@contextmanager
def _write_lock_held(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds ``path``'s write lock for ``seconds`` from now."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        yield
    finally:
        release.join()
        holder.close()


def test_first_connection_waits_for_a_write_lock_to_switch_to_wal(tmp_path: Path) -> None:
    # Leaving rollback-journal mode needs the file to itself and SQLite calls no busy handler
    # for it: the first write on a freshly migrated file failed at once ("database is locked").
    path = _migrated_journal_file(tmp_path)
    db = DatabaseConnection(path)
    try:
        with _write_lock_held(path, 0.3):
            prompt_id = new_prompt(db)
        assert get_prompt(db, prompt_id).id == prompt_id
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_wal_switch_gives_up_after_the_busy_timeout_naming_the_lock(tmp_path: Path) -> None:
    path = _migrated_journal_file(tmp_path)
    db = DatabaseConnection(path, busy_timeout_ms=100)
    try:
        with _write_lock_held(path, 1.0):
            started = time.monotonic()
            with pytest.raises(DatabaseError, match="database is locked"):
                new_prompt(db)
            assert 0.09 <= time.monotonic() - started < 0.9
        assert get_prompt(db, new_prompt(db))  # the lock gone, the switch is made
    finally:
        db.close()


def test_a_failing_rollback_after_an_error_does_not_hide_that_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a connection the error broke, the ROLLBACK fails too (MariaDB: "server has gone
    # away"): that raw second error reached the caller instead of the translated first one.
    from sqlalchemy import exc as sa_exc
    from sqlmodel import Session

    db = DatabaseConnection(tmp_path / "rollback.db")
    db.create_tables()
    prompt_id = new_prompt(db)

    def broken_rollback(self: Session) -> None:
        raise sa_exc.OperationalError("ROLLBACK", {}, Exception("server has gone away"))

    monkeypatch.setattr(Session, "rollback", broken_rollback)
    try:
        with pytest.raises(IntegrityViolation):
            with db.get_session() as session:
                # A duplicate id: IntegrityError from the driver, then the broken rollback.
                session.execute(
                    text("INSERT INTO prompts SELECT * FROM prompts WHERE id = :id"),
                    {"id": prompt_id},
                )
        with pytest.raises(KeyError):
            with db.get_session():
                raise KeyError("the body's own error")
    finally:
        monkeypatch.undo()
        db.close()


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])  # SQLite keeps its own sizes
def test_no_free_pooled_connection_is_a_database_error(backend: str, tmp_path: Path) -> None:
    from tests.conftest import connect as connect_to

    source = connect_to(backend, tmp_path)
    location = source.url.render_as_string(hide_password=False)
    source.close()
    db = DatabaseConnection(location, pool_size=1, max_overflow=0)
    db.engine.pool._timeout = 0.2  # type: ignore[attr-defined]
    try:
        with db.engine.connect():  # the only connection, held
            with pytest.raises(DatabaseError, match="no free connection"):
                with db.get_session() as session:
                    session.execute(text("SELECT 1"))
            # A lean read, a unit (transition) and a Core transaction (delete_run) each took
            # their connection elsewhere and let the raw TimeoutError through (a 500 over HTTP).
            for call in (
                lambda: list_prompts(db),
                lambda: transition(db, "r", "running"),
                lambda: delete_run(db, "r"),
            ):
                with pytest.raises(DatabaseError, match="no free connection"):
                    call()
    finally:
        db.close()


def test_values_are_measured_as_the_mysql_drivers_send_them() -> None:
    from cosmos_models.db.translate import values_size

    row = {"a": "é\\'x", "b": [b"\x00y", ("z",)], "c": 5, "d": None}
    # é: 2 bytes; \ and ' escaped: 2 each; x: 1 -> 7; b"\x00y": 3; "z": 1.
    assert values_size(row) == 11
    assert values_size(row, bound=True) == 4 * 4 + 2 * 2 + 4 * 1  # never below the exact size
    assert values_size([row, row]) == 22
