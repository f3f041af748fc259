"""One check for every form of location, secrets masked everywhere, one way in with one error
translation, and read-only opening (down to a read-only mount)."""

import sqlite3
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL, text
from sqlalchemy.exc import SQLAlchemyError

from cosmos_models import DatabaseConnection, DatabaseError, IntegrityViolation
from cosmos_models.aio import AsyncDatabase
from cosmos_models.db.locations import (
    get_database_url,
    is_secret_parameter,
    parse_location,
    redact,
    redact_url,
)
from cosmos_models.db.migrate import upgrade
from cosmos_models.db.tables import PROMPTS
from tests.factories import make_prompt
from tests.test_cli import cli, seed

# -- one check for every form of location ------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "sqlite:///file:../out.db?uri=true",
        "sqlite:///file:%2e%2e/out.db?uri=true",
        "sqlite:///file:%252e%252e/out.db?uri=true",
        "sqlite:///file:data/%2E%2E/%2E%2E/out.db?mode=rwc&uri=true",
        "sqlite:///file:/tmp/x/../../out.db?uri=true",
        "file:../out.db",
        "file:///tmp/%2e%2e/out.db",
        "file://evil.example/tmp/out.db",
        "sqlite:///file://evil.example/tmp/out.db?uri=true",
        "sqlite:///file:out%00.db?uri=true",
        "sqlite:///out.db?vfs=unix-none",
        "sqlite:///out.db?mode=memory",
        "file:out.db?mode=rwx",
    ],
)
def test_every_form_of_sqlite_location_is_checked(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    monkeypatch.chdir(inner)
    with pytest.raises(ValueError):
        DatabaseConnection(location)
    monkeypatch.setenv("COSMOS_DATABASE_URL", location)
    with pytest.raises(ValueError, match="COSMOS_DATABASE_URL is invalid"):
        get_database_url()
    with pytest.raises(ValueError, match="COSMOS_DATABASE_URL is invalid"):
        DatabaseConnection()
    assert sorted(tmp_path.rglob("*")) == [inner]  # nothing was created, inside or outside


def test_accepted_file_uris_become_the_checked_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_location("sqlite:///file:data/x.db?uri=true").database == str(
        tmp_path / "data" / "x.db"
    )
    spaced = parse_location(f"file://{tmp_path}/a%20b.db?mode=ro&cache=shared")
    assert spaced.database == str(tmp_path / "a b.db")
    assert dict(spaced.query) == {"mode": "ro", "cache": "shared"}
    assert parse_location("file::memory:").render_as_string() == "sqlite://"
    assert parse_location(f"file://localhost{tmp_path}/l.db").database == str(tmp_path / "l.db")
    with DatabaseConnection(f"sqlite:///file:{tmp_path}/a%20b.db?uri=true") as db:
        db.create_tables()
        assert db.path == tmp_path / "a b.db"
    assert (tmp_path / "a b.db").is_file()
    with DatabaseConnection(f"file:{tmp_path}/a%20b.db?mode=ro") as db:
        assert db.read_only
        with pytest.raises(DatabaseError, match=r"^read-only: "), db.begin() as connection:
            connection.execute(text("DELETE FROM prompts"))


def test_a_migration_through_a_file_uri_is_locked_and_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(path, "0001")
    result = upgrade(f"sqlite:///file:{path}?cache=shared&uri=true")
    assert result.backup_path is not None
    assert result.backup_path.is_file()
    assert result.backup_path.parent == tmp_path


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("PassWord", True),
        ("sslpassword", True),
        ("passfile", True),
        ("sslkey", True),
        ("api_token", True),
        ("client_secret", True),
        ("passphrase", True),
        ("application_name", False),
        ("sslmode", False),
        ("connect_timeout", False),
        ("charset", False),
    ],
)
def test_secret_parameter_names(name: str, secret: bool) -> None:
    assert is_secret_parameter(name) is secret


def test_query_parameter_secrets_are_masked_in_repr_and_errors() -> None:
    location = (
        "postgresql+psycopg://nobody@127.0.0.1:9/none"
        "?password=qp-S3cret&sslpassword=ssl-S3cret&application_name=visible-app"
    )
    db = DatabaseConnection(location)
    try:
        adb = AsyncDatabase(db.url)  # the whole URL goes through, secrets included
        shown_by = (
            repr(db),
            str(db),
            redact_url(db.url),
            str(db.engine.url),
            repr(db.engine),
            repr(db.url),  # SQLAlchemy's own URL repr masks the password alone
            str(db.url),
            repr(adb.url),
            repr(adb),
            repr(db.url.set(database="other")),
            repr(db.url.difference_update_query(["password"])),
        )
        for shown in shown_by:
            assert "S3cret" not in shown
            assert "visible-app" in shown
        assert "sslpassword=ssl-S3cret" in db.url.render_as_string(hide_password=False)
        assert adb.sync_db.url.render_as_string(hide_password=False) == (
            db.url.render_as_string(hide_password=False)
        )
        with pytest.raises(DatabaseError) as caught, db.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert str(caught.value).startswith("cannot connect to postgresql+psycopg://nobody@")
        assert "S3cret" not in str(caught.value)
    finally:
        db.close()


PASSWORD = st.text(
    alphabet=string.ascii_letters + string.digits + "@:/?#[]!$&'()*+,;=%~-._ ", min_size=6
).filter(lambda p: p.strip() == p and len(set(p)) > 2)


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORD, query_secret=PASSWORD)
def test_random_passwords_never_appear_anywhere(
    password: str, query_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = URL.create(
        "postgresql+psycopg",
        username="nobody",
        password=password,
        host="127.0.0.1",
        port=9,
        database="none",
        query={"sslpassword": query_secret},
    ).render_as_string(hide_password=False)
    seen: list[str] = []
    db = DatabaseConnection(url)
    try:
        seen += [repr(db), str(db), redact_url(db.url)]
        try:
            with db.get_session(read_only=True) as session:
                session.execute(text("SELECT 1"))
        except DatabaseError as exc:
            seen.append(str(exc))
    finally:
        db.close()
    for argv in (["db", "current"], ["runs", "list"], ["db", "upgrade"], ["stats"]):
        code, out, err = cli(capsys, *argv, "-d", url)
        assert code == 1
        seen += [out, err]
    for shown in seen:
        for secret in (password, query_secret):
            assert secret not in shown


def test_secret_query_parameters_still_reach_the_server(db: DatabaseConnection) -> None:
    if db.is_sqlite:
        # SQLite takes no secrets; a secret-looking parameter is refused like any unknown one.
        with pytest.raises(ValueError, match="'password' is not supported"):
            DatabaseConnection(f"sqlite:///{db.path or 'x.db'}?password=x")
        return
    # The driver gets the password from the query, the engine's URL does not show it. The test
    # PostgreSQL trusts every client (the password is not checked); the test MariaDB's root has
    # no password, so a given one is refused, which shows that it was sent.
    url = db.url.update_query_dict({"password": "not-shown-4711"})
    with DatabaseConnection(url) as other:
        assert "not-shown-4711" not in str(other.engine.url)
        if db.url.get_backend_name() == "postgresql":
            with other.connect(read_only=True) as connection:
                assert connection.execute(text("SELECT 1")).scalar_one() == 1
            return
        with pytest.raises(DatabaseError) as caught, other.connect(read_only=True) as connection:
            connection.execute(text("SELECT 1"))
        assert "using password: YES" in str(caught.value)
        assert "not-shown-4711" not in str(caught.value)


def test_redact_masks_the_longest_secret_whole() -> None:
    url = parse_location("postgresql://u:abc@h/d?password=abcdef")
    assert redact("x abcdef y abc z", url) == "x *** y *** z"


# -- errors: one class tree, one translation ---------------------------------------------------


def test_database_error_is_a_sqlalchemy_error(tmp_path: Path) -> None:
    error = DatabaseError("cannot connect to x: refused")
    assert isinstance(error, SQLAlchemyError)
    assert str(error) == "cannot connect to x: refused"
    assert issubclass(IntegrityViolation, SQLAlchemyError)
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text\n")
    with (
        pytest.raises(SQLAlchemyError, match=r"^not a database: "),
        DatabaseConnection(notes, read_only=True).connect(read_only=True) as connection,
    ):
        connection.execute(text("SELECT * FROM sqlite_master"))


def test_connect_and_begin_translate_errors_on_every_backend(db: DatabaseConnection) -> None:
    with pytest.raises(DatabaseError) as caught, db.connect(read_only=True) as connection:
        connection.execute(text("SELECT * FROM no_such_table_here"))
    assert str(caught.value).startswith("not migrated: run cosmos-models db upgrade (")
    assert "\n" not in str(caught.value)
    row = make_prompt(id="ps_core").model_dump()
    with db.begin() as connection:
        connection.execute(PROMPTS.insert().values(**row))
    with pytest.raises(RuntimeError, match="boom"), db.begin() as connection:
        connection.execute(PROMPTS.delete().where(PROMPTS.c.id == "ps_core"))
        raise RuntimeError("boom")  # rolled back: the row stays
    with pytest.raises(IntegrityViolation), db.begin() as connection:
        connection.execute(PROMPTS.insert().values(**row))  # the same primary key again
    with db.connect(read_only=True) as connection:
        count = connection.execute(text("SELECT COUNT(*) FROM prompts WHERE id = 'ps_core'"))
        assert count.scalar_one() == 1
    with db.begin() as connection:
        connection.execute(PROMPTS.delete().where(PROMPTS.c.id == "ps_core"))


# -- read-only ---------------------------------------------------------------------------------


def test_reading_a_wal_database_leaves_no_file_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wal.db"
    seed(str(path))
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for argv in (["runs", "list"], ["stats"], ["db", "check"], ["runs", "show", "rs_cli_done"]):
        assert cli(capsys, *argv, "-d", str(path))[0] == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs holding a seeded WAL database, remounted read-only (root bypasses chmod)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("needs mount(8) with CAP_SYS_ADMIN to make a read-only file system")
    try:
        seed(str(mount / "data.db"))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_database_on_a_read_only_mount_can_be_inspected(
    read_only_mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = read_only_mount / "data.db"
    # Why immutable=1: SQLite cannot open a WAL file read-only where it cannot create -shm.
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("SELECT 1 FROM prompts")
    for argv in (
        ["stats"],
        ["prompts", "list"],
        ["runs", "list"],
        ["runs", "show", "rs_cli_done"],
        ["watch", "--once", "rs_cli_done"],
        ["db", "current"],
        ["db", "history"],
        ["db", "check"],
    ):
        code, _, err = cli(capsys, *argv, "-d", str(path))
        assert (code, err) == (0, ""), argv
    for argv in (
        ["db", "upgrade"],
        ["db", "downgrade", "--yes"],
        ["prune", "--older-than", "30d"],
    ):
        code, _, err = cli(capsys, *argv, "-d", str(path))
        assert code == 1
        assert err.startswith("error: ")
        assert "read-only" in err
        assert err.count("\n") == 1
    with DatabaseConnection(path) as db:  # even when not asked for read-only
        assert db.read_only


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlite3.OperationalError("unable to open database file"), "cannot open DB: unable"),
        (sqlite3.DatabaseError("file is not a database"), "not a database: DB ("),
        (Exception(1146, "Table 'x.prompts' doesn't exist"), "not migrated: run cosmos-models"),
        (Exception(1054, "Unknown column 'worker_id'"), "not migrated: run cosmos-models"),
        (Exception(2003, "Can't connect to MySQL server"), "cannot connect to DB: "),
        (Exception(1290, "The MariaDB server is running with --read-only"), "read-only: DB "),
        (ValueError("something else\nsecond line"), "ValueError: something else"),
    ],
)
def test_each_kind_of_driver_error_gets_its_hint(error: Exception, expected: str) -> None:
    from cosmos_models.db.translate import describe_error

    described = describe_error(error, "DB")
    assert described.startswith(expected)
    assert "\n" not in described


def test_read_only_opening_follows_what_the_file_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.db"
    with DatabaseConnection(f"sqlite:///{path}?mode=rwc") as db:  # an explicit mode is kept
        assert db.engine.url.query["mode"] == "rwc"
        db.create_tables()
    with DatabaseConnection(path, read_only=True) as db:  # writable: rw + query_only
        assert db.engine.url.query["mode"] == "rw"
    # A file we may not write (root passes every permission check, so the check is faked).
    monkeypatch.setattr("cosmos_models.db.sqlite_files.os.access", lambda *_: False)
    with DatabaseConnection(path, read_only=True) as db:
        assert db.engine.url.query["mode"] == "ro"
        with db.connect(read_only=True) as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM prompts")).scalar_one() == 0
