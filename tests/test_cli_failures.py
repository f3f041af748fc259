"""The CLI's failure matrix: every command against every way a database can be wrong.

Each failure gives exit code != 0, exactly one line on stderr beginning ``error:`` that names the
problem (with what to do where that is known), no traceback, and no file created. Read-only
commands succeed on a read-only database; what only a write can do fails as "read-only".
"""

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from sqlalchemy import exc as sa_exc

from tests.backends import server_database
from tests.conftest import require_backend
from tests.test_cli import cli, seed

SERVER_DOWN = "postgresql+psycopg://nobody@127.0.0.1:9/none"
NOT_MIGRATED = "not migrated: run cosmos-models db upgrade"


@dataclass
class Places:
    """The files a case may use: only ``work`` (and the current directory) must stay unchanged."""

    work: Path
    out: Path
    archive: Path


def _command_args(places: Places) -> dict[str, list[str]]:
    """Each command as a user runs it (the database is added by the case)."""
    return {
        "stats": ["stats"],
        "prompts list": ["prompts", "list"],
        "runs list": ["runs", "list"],
        "runs show": ["runs", "show", "rs_cli_done"],
        "watch": ["watch", "--once"],
        "db current": ["db", "current"],
        "db history": ["db", "history"],
        "db check": ["db", "check"],
        "db upgrade": ["db", "upgrade"],
        "db downgrade": ["db", "downgrade", "base", "--yes"],
        "db backup": ["db", "backup", str(places.out / "copy.db")],
        "prune": ["prune", "--older-than", "30d"],
        "prune events": ["prune", "--progress-older-than", "30d"],
        "restore": ["restore", str(places.archive)],
        "demo": ["demo", "--seconds", "0.5", "--workers", "1", "--runs-per-prompt", "1"],
        "serve": ["serve", "--port", "8765"],  # uvicorn.run is replaced: the checks before it
    }


# A wrong argument for each command (the database itself is fine).
BAD_ARGUMENTS: dict[str, list[str]] = {
    "stats": ["stats", "--jsn"],
    "prompts list": ["prompts", "list", "--limit", "0"],
    "runs list": ["runs", "list", "--status", "sleeping"],
    "runs show": ["runs", "show"],
    "watch": ["watch", "--interval", "0"],
    "db current": ["db", "current", "extra"],
    "db history": ["db", "history", "--limit", "3"],
    "db check": ["db", "check", "extra"],
    "db upgrade": ["db", "upgrade", "no-such-revision"],
    "db downgrade": ["db", "downgrade", "no-such-revision", "--yes"],
    "db backup": ["db", "backup"],
    "prune": ["prune", "--older-than", "soon"],
    "prune events": ["prune"],  # neither --older-than nor --progress-older-than
    "restore": ["restore"],
    "demo": ["demo", "--workers", "0"],
    "serve": ["serve", "--port", "0"],
}

READS = {
    "stats",
    "prompts list",
    "runs list",
    "runs show",
    "watch",
    "db current",
    "db history",
    "db check",
    "db backup",  # reads the database, writes the copy elsewhere
    "serve",  # a read-only database is served read-only
}
# Where a kind of database is not a failure for a command: (command, kind) -> why.
SUCCEEDS = {
    ("db upgrade", "not migrated"): "migrating is the remedy",
    ("demo", "not migrated"): "the demo migrates first",
    ("db backup", "not migrated"): "an empty database is copied like any other",
    ("db downgrade", "not migrated"): "there is nothing to take down",
    **{(command, "read-only"): "reading a read-only database works" for command in READS},
}
# What the one line must say, per kind (None: any one-line "error:").
EXPECTED = {
    "server down": "cannot connect to postgresql+psycopg://nobody@127.0.0.1:9/none",
    "not a database": "not a database",
    "not migrated": NOT_MIGRATED,
    "read-only": "read-only",
    "bad argument": None,
}
SPECIAL = {("db backup", "server down"): "backup copies SQLite files"}


def _listing(*roots: Path) -> set[str]:
    return {str(path) for root in roots for path in root.rglob("*")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prune archive holding rows (written by the CLI from a scratch database)."""
    scratch = tmp_path_factory.mktemp("archive")
    database = str(scratch / "source.db")
    seed(database)
    path = scratch / "pruned.jsonl.gz"
    with pytest.raises(SystemExit) as exited:
        from cosmos_models.cli import main

        main(["prune", "--older-than", "30d", "--archive", str(path), "-d", database])
    assert exited.value.code in (0, None)
    return path


def _database(kind: str, work: Path, command: str) -> str:
    """A database location of the given kind inside ``work``."""
    if kind == "server down":
        return SERVER_DOWN
    if kind == "not a database":
        path = work / "notes.txt"
        path.write_text("these are my notes, not a database\n")
        return str(path)
    if kind == "not migrated":
        path = work / "empty.db"
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA user_version = 7")  # a valid SQLite file with no tables
        connection.close()
        return str(path)
    path = work / "seeded.db"
    seed(str(path))
    if command == "restore":  # the archive's run is not in the database: restoring writes
        with sqlite3.connect(path) as raw:
            raw.execute("DELETE FROM progress WHERE run_id = 'rs_cli_done'")
            raw.execute("DELETE FROM runs WHERE id = 'rs_cli_done'")
        raw.close()
    if kind == "read-only":
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return str(path)


CASES = [
    (command, kind)
    for command in BAD_ARGUMENTS
    for kind in ("server down", "not a database", "not migrated", "read-only", "bad argument")
]


@pytest.mark.parametrize(("command", "kind"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_every_command_against_every_failure(
    command: str,
    kind: str,
    archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    places = Places(work=tmp_path / "work", out=tmp_path / "out", archive=archive)
    places.work.mkdir()
    places.out.mkdir()
    monkeypatch.chdir(places.work)
    database = _database(kind, places.work, command)
    argv = BAD_ARGUMENTS[command] if kind == "bad argument" else _command_args(places)[command]
    before = _listing(places.work)
    before_bytes = {p: Path(p).read_bytes() for p in before if Path(p).is_file()}
    code, out, err = cli(capsys, *argv, "--database", database)
    assert "Traceback" not in out + err
    if (command, kind) in SUCCEEDS:
        assert code == 0, err
        assert err == ""
        if kind == "read-only":  # reading changed nothing and left nothing behind
            assert {p: Path(p).read_bytes() for p in before_bytes} == before_bytes
            assert _listing(places.work) == before
        return
    assert code != 0, out
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    expected = SPECIAL.get((command, kind), EXPECTED[kind])
    if expected is not None:
        assert expected in err
    assert _listing(places.work) == before, "a failing command created a file"


def test_bad_arguments_are_usage_errors_with_a_pointer_to_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = cli(capsys, "prompts", "list", "--limit", "0")
    assert code == 2
    assert out == ""
    assert err.startswith("error: Invalid value for '--limit'")
    assert "(see: cosmos-models prompts list --help)" in err
    code, _, err = cli(capsys, "no-such-command")
    assert (code, err.count("\n")) == (2, 1)
    code, out, err = cli(capsys, "db")  # no arguments: the group's help, as before
    assert code == 2
    assert "upgrade" in out + err


def test_read_only_commands_never_create_a_file_or_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo" / "x.db"
    for argv in (
        ["runs", "list"],
        ["prompts", "list"],
        ["stats"],
        ["db", "current"],
        ["db", "history"],
        ["db", "check"],
        ["watch", "--once"],
        ["runs", "show", "rs_x"],
        ["db", "backup", str(tmp_path / "copy.db")],
    ):
        code, _, err = cli(capsys, *argv, "-d", str(typo))
        assert code == 1
        assert err == f"error: database file {typo} does not exist\n"
    assert list(tmp_path.iterdir()) == []


def test_downgrade_that_drops_data_asks_for_yes_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "keep.db")
    seed(path)
    code, out, err = cli(capsys, "db", "downgrade", "base", "--no-backup", "-d", path)
    assert code == 1
    assert out == ""
    assert "would drop table progress (2 rows); table runs (2 rows); table prompts (1 rows)" in err
    assert "--yes" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "keep.db"]  # no backup, nothing dropped:
    assert cli(capsys, "stats", "--json", "-d", path)[1].count('"prompts": 1') == 1
    # 0002 -> 0001 drops the lifecycle columns: only those that hold values are named.
    down = ("db", "downgrade", "0002", "--yes", "--no-backup", "-d", path)
    assert cli(capsys, *down)[0] == 0  # what later revisions drop, confirmed with --yes
    code, _, err = cli(capsys, "db", "downgrade", "0001", "--no-backup", "-d", path)
    assert code == 0, err  # seed() leaves error_message, worker_id and heartbeat_at empty
    assert cli(capsys, "db", "upgrade", "0002", "--no-backup", "-d", path)[0] == 0
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE runs SET worker_id = 'w1' WHERE id = 'rs_cli_active'")
    code, _, err = cli(capsys, "db", "downgrade", "0001", "--no-backup", "-d", path)
    assert code == 1
    assert "would drop column runs.worker_id (1 values)" in err
    # With the backup on, the copy is the safety net: no question asked.
    code, out, _ = cli(capsys, "db", "downgrade", "base", "-d", path)
    assert code == 0
    assert "backup: " in out
    assert "revision after: (none)" in out


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_backend("postgresql")
    with server_database("postgresql") as url:
        yield url.render_as_string(hide_password=False)


def test_downgrade_that_drops_data_asks_for_yes_on_postgresql(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(postgres_url)
    code, _, err = cli(capsys, "db", "downgrade", "base", "-d", postgres_url)
    assert code == 1
    assert "would drop table progress (2 rows); table runs (2 rows); table prompts (1 rows)" in err
    code, out, _ = cli(capsys, "db", "current", "-d", postgres_url)
    assert (code, out.split()[1]) == (0, "(head)")
    code, out, err = cli(capsys, "db", "downgrade", "base", "--yes", "-d", postgres_url)
    assert code == 0, err
    assert "revision after: (none)" in out


HOOK_COMMANDS = [
    ["stats"],
    ["prompts", "list"],
    ["runs", "list"],
    ["db", "current"],
    ["db", "check"],
]


@pytest.mark.parametrize("argv", HOOK_COMMANDS, ids=" ".join)
def test_installed_script_fails_briefly_on_a_closed_port_and_a_text_file(
    argv: list[str], tmp_path: Path
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a database\n")
    script = Path(sys.executable).parent / "cosmos-models"
    for database in ("postgresql+psycopg://u:pw@127.0.0.1:9/x", str(text_file)):
        done = subprocess.run(
            [str(script), *argv, "--database", database],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
            cwd=tmp_path,
        )
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode != 0
        assert len(lines) <= 3, lines
        assert "Traceback" not in done.stdout + done.stderr
        assert "pw@" not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_every_revision_says_what_its_downgrade_drops() -> None:
    from cosmos_models.db.revisions import downgrade_drops, known_revisions

    for revision in known_revisions():
        drops = downgrade_drops(revision)
        assert isinstance(drops, dict), revision
        assert all(columns is None or isinstance(columns, tuple) for columns in drops.values())


def test_downgrade_losses_by_target(tmp_path: Path) -> None:
    from cosmos_models.db.migrate import downgrade_losses

    path = tmp_path / "t.db"
    seed(str(path))
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE runs SET error_message = 'oom'")
    raw.close()
    assert downgrade_losses(path, "0001") == [
        "column progress.seq (2 values)",  # 0005, newest first
        "column runs.error_message (2 values)",  # 0002
    ]
    assert downgrade_losses(path, "0002") == ["column progress.seq (2 values)"]
    assert downgrade_losses(path, "0005") == []  # already there
    assert downgrade_losses(path, "no-such-revision") == []  # Alembic reports it
    # Columns of a table that goes whole are counted with the table, not twice.
    assert downgrade_losses(path, "base") == [
        "table progress (2 rows)",
        "table runs (2 rows)",
        "table prompts (1 rows)",
    ]
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE progress")
    raw.close()
    assert downgrade_losses(path, "base") == ["table runs (2 rows)", "table prompts (1 rows)"]


@pytest.mark.parametrize(
    "raised",
    [
        sqlite3.OperationalError("disk I/O error"),
        sa_exc.ArgumentError("bad argument\nmore"),
        typer.Abort(),
    ],
    ids=["sqlite3", "sqlalchemy", "abort"],
)
def test_unexpected_errors_are_still_one_line(
    raised: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*_: object) -> None:
        raise raised

    monkeypatch.setattr("cosmos_models.cli.db.migrate.current_revision", fail)
    code, out, err = cli(capsys, "db", "current", "-d", ":memory:")
    assert code == 1
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in out + err
