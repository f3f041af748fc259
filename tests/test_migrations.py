"""Alembic migrations on SQLite files, PostgreSQL and MariaDB: head, schema, round trips, safety."""

import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, create_engine, insert, inspect, select, text

from cosmos_models import DatabaseConnection, MigrationError, Run, init_database
from cosmos_models.db.migrate import current_revision, downgrade, schema_differences, upgrade
from cosmos_models.db.revisions import (
    VERSION_TABLE,
    alembic_config,
    head_revision,
    script_location,
    scripts,
)
from tests.backends import server_database
from tests.conftest import require_backend
from tests.databases import fresh_url
from tests.factories import add_prompt_with_run

MIGRATION_BACKENDS = ("sqlite-file", "postgresql", "mariadb")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(params=MIGRATION_BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new empty database of its own, on each backend."""
    with fresh_url(str(request.param), tmp_path) as url:
        yield url


def revisions_in_order() -> list[str]:
    script = scripts()
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_there_is_one_head() -> None:
    script = scripts()
    assert len(script.get_heads()) == 1
    assert head_revision() == script.get_current_head()


def test_scripts_are_found_in_the_checkout() -> None:
    assert (script_location() / "env.py").is_file()


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    result = upgrade(empty_url)
    assert result.before is None
    assert result.after == head_revision()
    assert schema_differences(empty_url) == []
    again = upgrade(empty_url)
    assert not again.changed
    assert again.backup_path is None


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    assert current_revision(empty_url) is None
    engine = create_engine(DatabaseConnection(empty_url).url)
    try:
        assert not {"prompts", "runs", "progress"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert schema_differences(empty_url) == []


def _sample_value(column: object) -> object:
    from datetime import UTC, datetime

    name = column.name  # type: ignore[attr-defined]
    type_name = type(column.type).__name__.lower()  # type: ignore[attr-defined]
    if name in {"inputs", "parameters", "execution_config", "outputs", "metadata"}:
        # MariaDB reflects JSON columns as LONGTEXT: give those the JSON text.
        return {"kept": name} if "json" in type_name else json.dumps({"kept": name})
    if "date" in type_name or "time" in type_name:
        return datetime(2025, 1, 4, 12, 0, 0, 123456, tzinfo=UTC)
    if name == "status":
        return "running"
    if name in {"percentage", "latest_percentage"}:
        return 42.5
    if name == "seq":
        return 1  # one event per run in this test
    if "int" in type_name:
        return None
    return f"v_{name}"


def test_data_survives_every_step_and_round_trip(empty_url: str) -> None:
    """Rows written at each revision survive the next upgrade and a down/up round trip."""
    database = DatabaseConnection(empty_url)
    written: list[tuple[str, dict[str, object]]] = []
    try:
        for step, revision in enumerate(revisions_in_order()):
            upgrade(database, revision)
            reflected = MetaData()
            reflected.reflect(database.engine, only=["prompts", "runs", "progress"])
            suffix = f"_{step}"
            with database.engine.begin() as connection:
                values = {}
                for table_name, fk in (
                    ("prompts", None),
                    ("runs", "prompt_id"),
                    ("progress", "run_id"),
                ):
                    table = reflected.tables[table_name]
                    row = {c.name: _sample_value(c) for c in table.columns}
                    row = {k: v for k, v in row.items() if v is not None}
                    if "id" in row:
                        row["id"] = f"{table_name}{suffix}"
                    if fk:
                        row[fk] = values[{"prompt_id": "prompts", "run_id": "runs"}[fk]]["id"]
                    connection.execute(insert(table).values(**row))
                    values[table_name] = row
                    written.append((table_name, row))
            if revision != revisions_in_order()[0]:
                downgrade(database, "-1")
                upgrade(database, revision)
        upgrade(database, "head")
        with database.get_session() as session:
            runs = {run.id: run for run in session.scalars(select(Run))}
            assert set(runs) == {row["id"] for table, row in written if table == "runs"}
            for table, row in written:
                if table == "runs":
                    assert runs[row["id"]].outputs == {"kept": "outputs"}
                    assert runs[row["id"]].created_at == row["created_at"]
            assert session.execute(text("SELECT COUNT(*) FROM progress")).scalar_one() == len(
                revisions_in_order()
            )
    finally:
        database.close()


def _t(minute: int) -> datetime:
    return datetime(2025, 1, 4, 12, minute, tzinfo=UTC)


def test_0005_numbers_existing_events_and_builds_the_summary(empty_url: str) -> None:
    """Backfill: seq by (timestamp, id) per run, the summary from the greatest seq; a real
    downgrade removes both and keeps every event."""
    database = DatabaseConnection(empty_url)
    try:
        upgrade(database, "0002")
        reflected = MetaData()
        reflected.reflect(database.engine, only=["prompts", "runs", "progress"])
        prompts, runs, progress = (reflected.tables[n] for n in ("prompts", "runs", "progress"))
        # MariaDB reflects JSON columns as LONGTEXT: give those the JSON text.
        empty: object = {} if "json" in type(runs.c.outputs.type).__name__.lower() else "{}"
        with database.engine.begin() as connection:
            connection.execute(
                insert(prompts).values(
                    id="ps_1",
                    model_type="t",
                    prompt_text="p",
                    inputs=empty,
                    parameters=empty,
                    created_at=_t(0),
                )
            )
            for run_id in ("rs_a", "rs_b", "rs_silent"):
                connection.execute(
                    insert(runs).values(
                        id=run_id,
                        prompt_id="ps_1",
                        model_type="t",
                        status="running",
                        execution_config=empty,
                        outputs=empty,
                        metadata=empty,
                        created_at=_t(0),
                        updated_at=_t(0),
                    )
                )
            # ids out of time order, a tie on timestamp, and two runs interleaved.
            for event_id, run_id, minute, stage in (
                (1, "rs_a", 30, "third"),
                (2, "rs_b", 5, "b-only"),
                (3, "rs_a", 10, "first"),
                (4, "rs_a", 20, "tie-lower-id"),
                (5, "rs_a", 20, "tie-higher-id"),
            ):
                connection.execute(
                    insert(progress).values(
                        id=event_id,
                        run_id=run_id,
                        timestamp=_t(minute),
                        stage=stage,
                        percentage=float(event_id),
                        message=f"m{event_id}",
                    )
                )
            if database.engine.dialect.name == "postgresql":  # explicit ids skip the sequence
                connection.execute(text("SELECT setval('progress_id_seq', 5)"))
        upgrade(database, "head")
        with database.engine.connect() as connection:
            numbered = connection.execute(
                text("SELECT run_id, seq, id FROM progress ORDER BY run_id, seq")
            ).all()
            summary = connection.execute(
                text(
                    "SELECT id, progress_count, latest_seq, latest_stage, latest_message "
                    "FROM runs ORDER BY id"
                )
            ).all()
        assert [tuple(r) for r in numbered] == [
            ("rs_a", 1, 3),
            ("rs_a", 2, 4),
            ("rs_a", 3, 5),
            ("rs_a", 4, 1),
            ("rs_b", 1, 2),
        ]
        assert [tuple(r) for r in summary] == [
            ("rs_a", 4, 4, "third", "m1"),
            ("rs_b", 1, 1, "b-only", "m2"),
            ("rs_silent", 0, 0, None, None),
        ]
        from cosmos_models import latest_progress, progress_since, record_progress

        assert latest_progress(database, ["rs_a"])["rs_a"].id == 1
        assert record_progress(database, "rs_a", "next", 50.0).seq == 5
        assert [e.id for e in progress_since(database, "rs_a")][:4] == [3, 4, 5, 1]

        downgrade(database, "0002")
        inspector = inspect(database.engine)
        assert "seq" not in {c["name"] for c in inspector.get_columns("progress")}
        assert not {"progress_count", "latest_seq", "latest_stage"} & {
            c["name"] for c in inspector.get_columns("runs")
        }
        assert not inspector.get_unique_constraints("progress")
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM progress")).scalar_one() == 6
        upgrade(database, "head")
        assert schema_differences(database) == []
    finally:
        database.close()


def test_0005_keeps_sqlite_autoincrement_of_progress(tmp_path: Path) -> None:
    """0003 makes progress AUTOINCREMENT; 0005's rebuilds (up and down) must keep it."""
    url = f"sqlite:///{tmp_path / 'auto.db'}"
    for step in ("head", "0004", "head"):
        (upgrade if step == "head" else downgrade)(url, step)
        connection = sqlite3.connect(tmp_path / "auto.db")
        try:
            (sql,) = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'progress'"
            ).fetchone()
        finally:
            connection.close()
        assert "AUTOINCREMENT" in sql, (step, sql)


def test_newer_or_unknown_revision_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    upgrade(path)
    with DatabaseConnection(path) as database, database.engine.begin() as connection:
        connection.execute(
            text("UPDATE cosmos_models_version SET version_num = 'ffff_from_future'")
        )
    before = md5(path)
    with pytest.raises(MigrationError, match="ffff_from_future") as caught:
        upgrade(path)
    assert head_revision() in str(caught.value)
    assert md5(path) == before
    assert not list(tmp_path.glob("*.backup-*"))


def test_unknown_revision_is_refused_on_servers(empty_url: str) -> None:
    upgrade(empty_url)
    with DatabaseConnection(empty_url) as database, database.engine.begin() as connection:
        connection.execute(text("UPDATE cosmos_models_version SET version_num = 'ffff'"))
    with pytest.raises(MigrationError, match="'ffff'"):
        upgrade(empty_url)
    with pytest.raises(MigrationError, match="'ffff'"):
        init_database(empty_url)


def test_sqlite_backup_is_made_before_a_change(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    upgrade(path, revisions_in_order()[0])
    # Plain SQL: the live models have columns that this first revision does not.
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prompts (id, model_type, prompt_text, inputs, parameters, created_at)"
                " VALUES ('ps_1', 'transfer', 'text', '{}', '{}', '2025-01-04 12:00:00.000000')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO runs (id, prompt_id, model_type, status, execution_config, outputs,"
                " metadata, created_at, updated_at) VALUES ('rs_1', 'ps_1', 'transfer',"
                " 'pending', '{}', '{}', '{}', '2025-01-04 12:00:00.000000',"
                " '2025-01-04 12:00:00.000000')"
            )
        )
    engine.dispose()
    lines: list[str] = []
    result = upgrade(path, report=lines.append)
    if result.after == result.before:  # only one revision so far: go down and up instead
        result = downgrade(path, "base", report=lines.append)
    assert result.backup_path is not None
    assert result.backup_path.parent == tmp_path
    assert result.backup_path.name.startswith(f"b.backup-{result.before}-")
    assert f"backup: {result.backup_path}" in lines
    engine = create_engine(f"sqlite:///{result.backup_path}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM runs")).scalar_one() == 1
    finally:
        engine.dispose()


def test_no_backup_when_asked_or_nothing_to_lose(tmp_path: Path) -> None:
    assert upgrade(tmp_path / "new.db").backup_path is None
    assert upgrade(tmp_path / "new.db").backup_path is None
    result = downgrade(tmp_path / "new.db", "base", backup=False)
    assert result.backup_path is None
    assert list(tmp_path.iterdir()) == [tmp_path / "new.db"]


def test_failed_upgrade_leaves_the_data_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.db"
    upgrade(path)
    add_prompt_with_run(DatabaseConnection(path))

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(command, "downgrade", broken)
    with pytest.raises(MigrationError, match=r"downgrade to 'base' failed: disk on fire"):
        downgrade(path, "base")
    with DatabaseConnection(path) as database, database.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM runs")).scalar_one() == 1
    assert current_revision(path) == head_revision()


def _migrate_in_process(
    url: str, queue: "multiprocessing.Queue[tuple[str | None, str | None]]"
) -> None:
    result = upgrade(url)
    queue.put((result.before, result.after))


def test_concurrent_migrations_apply_once(empty_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[str | None, str | None]] = context.Queue()
    processes = [
        context.Process(target=_migrate_in_process, args=(empty_url, queue)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    results = [queue.get(timeout=5) for _ in processes]
    assert sorted(results, key=str).count((None, head_revision())) == 1
    assert results.count((head_revision(), head_revision())) == 3
    with DatabaseConnection(empty_url) as database, database.engine.connect() as connection:
        assert (
            connection.execute(text("SELECT COUNT(*) FROM cosmos_models_version")).scalar_one() == 1
        )


def test_env_py_takes_the_url_from_the_environment_or_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = alembic_config()
    monkeypatch.setenv("COSMOS_DATABASE_URL", str(tmp_path / "env.db"))
    command.upgrade(config, "head")
    assert current_revision(tmp_path / "env.db") == head_revision()
    database = DatabaseConnection(tmp_path / "engine.db")
    try:
        config = alembic_config()
        config.attributes["connection"] = database.engine
        command.upgrade(config, "head")
        assert current_revision(database) == head_revision()
    finally:
        database.close()
    monkeypatch.setenv("COSMOS_DATABASE_URL", "../escape.db")
    with pytest.raises(ValueError, match="COSMOS_DATABASE_URL"):
        command.upgrade(alembic_config(), "head")


def test_offline_sql_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'off.db'}")
    command.upgrade(config, "head", sql=True)
    assert "CREATE TABLE prompts" in capsys.readouterr().out


@pytest.mark.slow
def test_wheel_install_migrates_outside_the_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, and upgrade a database from elsewhere."""
    root = Path(__file__).resolve().parents[1]
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(root),
        ],
        check=True,
    )
    wheel = next(dist.glob("cosmos_models-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # Dependencies come from this environment; the package itself only from the wheel.
    import sqlmodel

    deps = Path(sqlmodel.__file__).resolve().parents[1]
    (site / "deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = (
        "import cosmos_models, cosmos_models.db.migrate as m, pathlib, sys\n"
        "from cosmos_models.db.revisions import script_location\n"
        "assert str(pathlib.Path(cosmos_models.__file__)).startswith(sys.prefix), cosmos_models.__file__\n"
        "print(script_location())\n"
        "r = m.upgrade('db/x.db')\n"
        "print(r.before, r.after)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "COSMOS_DATABASE_URL"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stdout
    assert f"None {head_revision()}" in out.stdout
    assert (work / "db" / "x.db").exists()


def test_mariadb_spelling_of_the_url_gives_the_same_schema() -> None:
    """``mariadb://`` names the dialect 'mariadb', not 'mysql': types must not differ by name."""
    require_backend("mariadb")
    with server_database("mariadb") as url:
        mariadb_url = url.set(drivername="mariadb+pymysql").render_as_string(hide_password=False)
        upgrade(mariadb_url)
        assert schema_differences(mariadb_url) == []
        with DatabaseConnection(mariadb_url) as database:
            add_prompt_with_run(
                database, created_at=datetime(2025, 1, 4, 0, 0, 0, 654321, tzinfo=UTC)
            )
            with database.get_session() as session:
                run = session.scalars(select(Run)).one()
                assert run.created_at.microsecond == 654321


def test_an_apps_own_alembic_history_is_left_alone(tmp_path: Path) -> None:
    """Apps keep these tables beside their own, often with their own Alembic history."""
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('app_rev_42')")
        connection.execute("CREATE TABLE app_users (id INTEGER PRIMARY KEY)")
    connection.close()
    assert upgrade(path).after == head_revision()
    assert schema_differences(path) == []
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("app_rev_42",)
        ]
    finally:
        connection.close()


def test_schema_check_sees_what_autogenerate_cannot(empty_url: str) -> None:
    """A database stamped at head without 0003/0004's changes, or left at an older revision,
    fails the check: SQLite ids that would be reused, MariaDB comparisons that are not exact."""
    upgrade(empty_url)
    downgrade(empty_url, "0002")
    differences = [str(item) for item in schema_differences(empty_url)]
    assert f"revision 0002 is not head {head_revision()}: run cosmos-models db upgrade" in (
        differences
    )
    # Stamped at head by hand: the revision is right, the schema is not.
    engine = create_engine(DatabaseConnection(empty_url).url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(f"UPDATE {VERSION_TABLE} SET version_num = :head"), {"head": head_revision()}
            )
    finally:
        engine.dispose()
    differences = [str(item) for item in schema_differences(empty_url)]
    assert not any(item.startswith("revision") for item in differences)
    if empty_url.startswith("sqlite"):
        assert "table progress is not AUTOINCREMENT: deleted ids would be reused" in differences
    elif empty_url.startswith("mysql"):
        assert any(
            item.startswith("column runs.id has collation utf8mb4_bin") for item in differences
        )
        assert not any("runs.outputs" in item for item in differences)  # JSON keeps its own
    else:  # 0003 and 0004 change nothing on PostgreSQL: only 0005's columns are missing
        assert not any("AUTOINCREMENT" in item or "collation" in item for item in differences)
