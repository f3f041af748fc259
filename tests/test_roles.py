"""Least privilege on PostgreSQL and MariaDB: the app role works and cannot change the schema.

Roles are server-global: each test makes its own database and roles with a unique prefix and
drops them afterwards (other people share these servers).
"""

import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, text

from cosmos_models import (
    CosmosModelsError,
    DatabaseConnection,
    DatabaseError,
    claim_next_run,
    create_prompt,
    create_run,
    follow_progress,
    get_run_detail,
    latest_progress,
    list_runs,
    progress_since,
    record_progress_batch,
    transition,
)
from cosmos_models.cli import main
from cosmos_models.db.migrate import downgrade, schema_differences, upgrade
from cosmos_models.db.roles import RoleNames, create_roles, grant_statements, role_sql
from cosmos_models.services.maintenance import prune
from cosmos_models.services.restore import restore
from tests.backends import admin_url, server_database
from tests.conftest import require_backend
from tests.test_cli import cli

SERVERS = ("postgresql", "mariadb")
NOW = datetime(2026, 6, 15, tzinfo=UTC)


@dataclass
class Server:
    backend: str
    admin: URL  # the throw-away database, as the administrator
    prefix: str

    def as_role(self, kind: str, password: str = "") -> URL:
        return self.admin.set(
            username=RoleNames.from_prefix(self.prefix).name(kind), password=password
        )


def _drop_roles(backend: str, prefix: str) -> None:
    engine = create_engine(admin_url(backend), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for kind in ("owner", "app", "reader"):
                name = RoleNames.from_prefix(prefix).name(kind)
                if backend == "postgresql":
                    connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
                else:
                    connection.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))
    finally:
        engine.dispose()


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    backend = str(request.param)
    require_backend(backend)
    prefix = f"t{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with server_database(backend) as url:
            yield Server(backend, url, prefix)
    finally:
        _drop_roles(backend, prefix)


PASSWORDS = {"owner": "Own'er pw:%s 1", "app": "app pw 2", "reader": "reader pw 3"}


def _as(server: Server, kind: str) -> DatabaseConnection:
    return DatabaseConnection(server.as_role(kind, PASSWORDS[kind]))


def _refused(db: DatabaseConnection, statement: str) -> None:
    with pytest.raises(DatabaseError), db.begin() as connection:
        connection.execute(text(statement))


def _service_round(db: DatabaseConnection, archive: Path) -> None:
    """Every kind of service call a worker, a dashboard and a cron job make."""
    prompt = create_prompt(
        db, {"model_type": "transfer", "prompt_text": "city", "inputs": {}, "parameters": {}}
    )
    run = create_run(db, prompt.id)
    claimed = claim_next_run(db, "gpu-1")
    assert claimed is not None
    assert claimed.id == run.id
    old = NOW - timedelta(days=400)
    events = [
        {"run_id": run.id, "stage": "inference", "percentage": float(p), "timestamp": old}
        for p in range(5)
    ] + [{"run_id": run.id, "stage": "inference", "percentage": 50.0, "timestamp": NOW}]
    assert record_progress_batch(db, events) == 6
    transition(db, run.id, "running")
    assert latest_progress(db, [run.id])[run.id].percentage == 50.0
    assert [e.seq for e in progress_since(db, run.id, after=2)] == [3, 4, 5, 6]
    assert [e.seq for e in follow_progress(db, [run.id], after={run.id: 4}, idle_timeout=0.2)] == [
        5,
        6,
    ]
    assert get_run_detail(db, run.id).latest_progress is not None
    assert [r.id for r in list_runs(db).items] == [run.id]
    result = prune(db, progress_older_than=timedelta(days=30), archive_path=archive, now=NOW)
    assert result.expired_progress == 5
    assert [e.seq for e in progress_since(db, run.id)] == [6]
    restored = restore(db, archive)
    assert restored.restored["progress"] == 5
    assert [e.seq for e in progress_since(db, run.id)] == [1, 2, 3, 4, 5, 6]
    transition(db, run.id, "completed")
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert prune(db, older_than=timedelta(0), now=later).runs == 1


def test_app_role_works_and_cannot_change_the_schema(server: Server, tmp_path: Path) -> None:
    admin = DatabaseConnection(server.admin)
    # Tables made by the administrator first: the roles take them over.
    upgrade(admin)
    result = create_roles(admin, prefix=server.prefix, passwords=PASSWORDS)
    roles = result.roles
    assert result.created == [roles.owner, roles.app, roles.reader]
    assert result.generated == {}
    admin.close()
    owner, app, reader = _as(server, "owner"), _as(server, "app"), _as(server, "reader")
    try:
        # The owner migrates: down and up again rebuilds progress (partitioned on PostgreSQL);
        # default privileges give the app and the reader the new tables.
        downgrade(owner, "0005")
        upgrade(owner)
        assert schema_differences(owner) == []
        _service_round(app, tmp_path / "archive.jsonl.gz")
        for statement in (
            "ALTER TABLE runs ADD COLUMN sneaky INTEGER",
            "DROP TABLE progress",
            "CREATE TABLE sneaky (x INTEGER)",
            "CREATE INDEX ix_sneaky ON runs (status)",
        ):
            _refused(app, statement)
        with reader.connect(read_only=True) as connection:
            assert connection.execute(text("SELECT count(*) FROM runs")).scalar_one() == 0
        for statement in (
            "INSERT INTO prompts (id) VALUES ('x')",
            "UPDATE runs SET status = 'failed'",
            "DELETE FROM progress",
            "DROP TABLE runs",
        ):
            _refused(reader, statement)
        # A table a later migration adds is covered (default privileges / database grants).
        with owner.begin() as connection:
            connection.execute(text("CREATE TABLE later_table (x INTEGER)"))
        with app.begin() as connection:
            connection.execute(text("INSERT INTO later_table (x) VALUES (1)"))
        with reader.connect(read_only=True) as connection:
            assert connection.execute(text("SELECT x FROM later_table")).scalar_one() == 1
        _refused(reader, "INSERT INTO later_table (x) VALUES (2)")
        _refused(app, "DROP TABLE later_table")
    finally:
        for db in (owner, app, reader):
            db.close()


def test_roles_again_keep_passwords_unless_given(server: Server) -> None:
    admin = DatabaseConnection(server.admin)
    try:
        first = create_roles(admin, prefix=server.prefix, passwords={"app": PASSWORDS["app"]})
        assert set(first.generated) == {"owner", "reader"}
        assert all(len(value) >= 24 for value in first.generated.values())
        again = create_roles(admin, prefix=server.prefix)
        assert (again.created, again.password_changed, again.generated) == ([], [], {})
        changed = create_roles(admin, prefix=server.prefix, passwords={"reader": "new one"})
        assert changed.password_changed == [changed.roles.reader]
    finally:
        admin.close()
    if server.backend == "mariadb":  # PostgreSQL's test server trusts 127.0.0.1: no password
        with DatabaseConnection(server.as_role("reader", "new one")).connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        wrong = DatabaseConnection(server.as_role("reader", first.generated["reader"]))
        with pytest.raises(DatabaseError) as caught, wrong.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert first.generated["reader"] not in str(caught.value)
        wrong.close()


def test_a_failing_role_statement_never_shows_the_password(server: Server) -> None:
    admin = DatabaseConnection(server.admin)
    try:
        create_roles(admin, prefix=server.prefix, passwords=PASSWORDS)
        # As the app role, creating roles is refused: the error names the step, not the secret.
        app = _as(server, "app")
        secret = "do-not-print-me"
        with pytest.raises(CosmosModelsError) as caught:
            create_roles(
                app, prefix=server.prefix + "x", passwords=dict.fromkeys(PASSWORDS, secret)
            )
        assert "role" in str(caught.value)
        assert secret not in str(caught.value)
        # Roles that exist keep their passwords (none is sent); then a grant fails (PostgreSQL)
        # or the role lookup (MariaDB), and the error says which step.
        with pytest.raises(CosmosModelsError, match="failed"):
            create_roles(app, prefix=server.prefix)
        app.close()
    finally:
        admin.close()
        _drop_roles(server.backend, server.prefix + "x")


def test_roles_on_sqlite_are_refused(tmp_path: Path) -> None:
    db = DatabaseConnection(tmp_path / "x.db")
    with pytest.raises(CosmosModelsError, match="SQLite has none"):
        create_roles(db)
    with pytest.raises(CosmosModelsError, match="SQLite has none"):
        role_sql(db)
    db.close()


@pytest.mark.parametrize(
    "prefix", ["", "Cosmos", "1abc", "a-b", "a b", "x" * 41, "a'; DROP", None, 3]
)
def test_bad_prefixes_are_refused(prefix: object) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RoleNames.from_prefix(prefix)  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ["", "back\\slash", "new\nline", "nul\x00"])
def test_bad_passwords_are_refused_without_being_shown(password: str) -> None:
    db = DatabaseConnection("postgresql+psycopg://u@127.0.0.1:1/d")
    with pytest.raises(ValueError, match="owner password") as caught:
        role_sql(db, passwords={"owner": password})
    if password:
        assert password not in str(caught.value)
    with pytest.raises(ValueError, match="not one of"):
        create_roles(db, passwords={"admin": "x"})
    db.close()


def test_grants_refuse_a_quoted_database_name() -> None:
    with pytest.raises(ValueError, match="database name"):
        grant_statements("postgresql", 'x"; DROP', RoleNames.from_prefix("c"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://u@127.0.0.1:1/shop",
            "CREATE ROLE \"cosmos_app\" LOGIN PASSWORD :'cosmos_app_password';",
        ),
        (
            "mysql+pymysql://u@127.0.0.1:1/shop",
            "CREATE USER 'cosmos_app'@'%' IDENTIFIED BY :'cosmos_app_password';",
        ),
    ],
)
def test_cli_prints_sql_with_placeholders(
    url: str, expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSMOS_ROLE_PASSWORD_APP", "s3cret")
    with pytest.raises(SystemExit) as exited:
        main(["db", "roles", "--sql", "--database", url])
    printed = capsys.readouterr().out
    assert exited.value.code == 0
    assert expected in printed.splitlines()
    assert "s3cret" not in printed
    assert ("ALTER DEFAULT PRIVILEGES" in printed) == url.startswith("postgresql")
    assert ("ON `shop`.*" in printed) == url.startswith("mysql")


def test_cli_prints_given_passwords_only_when_asked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://u@127.0.0.1:1/shop"
    monkeypatch.setenv("COSMOS_ROLE_PASSWORD_APP", "s3cret")
    with pytest.raises(SystemExit) as exited:
        main(["db", "roles", "--sql", "--with-passwords", "--database", url])
    assert exited.value.code == 1
    assert "COSMOS_ROLE_PASSWORD_OWNER" in capsys.readouterr().err
    monkeypatch.setenv("COSMOS_ROLE_PASSWORD_OWNER", "o'wn")
    monkeypatch.setenv("COSMOS_ROLE_PASSWORD_READER", "r")
    with pytest.raises(SystemExit) as exited:
        main(["db", "roles", "--sql", "--with-passwords", "--database", url])
    printed = capsys.readouterr().out
    assert exited.value.code == 0
    assert "PASSWORD 's3cret';" in printed
    assert "PASSWORD 'o''wn';" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database", "PATH"], "SQLite has none"),
        (["--database", "postgresql+psycopg://u@127.0.0.1:1/d"], "--password-file"),
        (["--with-passwords", "--database", "postgresql+psycopg://u@127.0.0.1:1/d"], "with --sql"),
        (
            ["--prefix", "Bad", "--sql", "--database", "postgresql+psycopg://u@127.0.0.1:1/d"],
            "prefix",
        ),
    ],
)
def test_cli_roles_refusals(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "never.db"
    args = [str(path) if a == "PATH" else a for a in args]
    with pytest.raises(SystemExit) as exited:
        main(["db", "roles", *args])
    assert exited.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not path.exists()


def test_cli_creates_roles_and_writes_generated_passwords(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.admin.render_as_string(hide_password=False)
    passwords = tmp_path / "passwords"
    with pytest.raises(SystemExit) as exited:
        main(
            ["db", "roles", "--prefix", server.prefix, "--password-file", str(passwords), "-d", url]
        )
    printed = capsys.readouterr().out
    assert exited.value.code == 0, printed
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    lines = dict(line.split("=", 1) for line in passwords.read_text().splitlines())
    roles = RoleNames.from_prefix(server.prefix)
    assert set(lines) == {roles.owner, roles.app, roles.reader}
    assert not any(value in printed for value in lines.values())
    with DatabaseConnection(server.as_role("app", lines[roles.app])).connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    # An existing password file is refused before any role changes.
    with pytest.raises(SystemExit) as exited:
        main(
            ["db", "roles", "--prefix", server.prefix, "--password-file", str(passwords), "-d", url]
        )
    assert exited.value.code == 1
    assert "exists" in capsys.readouterr().err
    # A failure (here: a server that is down) removes the new, empty password file.
    down = server.admin.set(port=1).render_as_string(hide_password=False)
    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit) as exited:
        main(["db", "roles", "--prefix", server.prefix, "--password-file", str(fresh), "-d", down])
    assert exited.value.code == 1
    assert not fresh.exists()
    capsys.readouterr()


def test_cli_roles_with_every_password_given(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.admin.render_as_string(hide_password=False)
    for kind, password in PASSWORDS.items():
        monkeypatch.setenv(f"COSMOS_ROLE_PASSWORD_{kind.upper()}", password)
    code, out, _ = cli(capsys, "db", "roles", "--prefix", server.prefix, "-d", url)
    assert code == 0
    assert "created: " in out
    assert "generated" not in out
    code, out, _ = cli(capsys, "db", "roles", "--prefix", server.prefix, "-d", url)
    assert code == 0
    assert "created: none (all existed)" in out
    assert "password set: " in out
    assert not any(password in out for password in PASSWORDS.values())
