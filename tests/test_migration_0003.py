"""Migration 0003: SQLite's progress table becomes AUTOINCREMENT, every row and id kept."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from cosmos_models import DatabaseConnection, Progress
from cosmos_models.db.migrate import downgrade, schema_differences, upgrade
from tests.backends import server_database
from tests.conftest import require_backend
from tests.factories import add_prompt_with_run

WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def progress_sql(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(
            connection.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'progress'"
            ).fetchone()[0]
        )


def add_prompt_and_run_at_0002(path: Path) -> str:
    """A prompt and a run written as revision 0002 holds them (the models are at head)."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO prompts (id, model_type, prompt_text, inputs, parameters, created_at) "
            "VALUES ('ps_1', 'transfer', 'p', '{}', '{}', '2025-01-01 00:00:00.000000')"
        )
        connection.execute(
            "INSERT INTO runs (id, prompt_id, model_type, status, execution_config, outputs, "
            "metadata, created_at, updated_at) VALUES ('rs_1', 'ps_1', 'transfer', 'running', "
            "'{}', '{}', '{}', '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000')"
        )
    return "rs_1"


def add_raw_events(path: Path, run_id: str, count: int) -> list[int]:
    """Events inserted as revisions before 0005 insert them (no seq)."""
    with sqlite3.connect(path) as connection:
        return [
            int(
                connection.execute(
                    "INSERT INTO progress (run_id, stage, percentage, message, timestamp) "
                    "VALUES (?, 's', ?, '', '2025-01-01 00:00:00.000000')",
                    (run_id, float(i)),
                ).lastrowid
                or 0
            )
            for i in range(count)
        ]


def add_events(path: Path, run_id: str, count: int) -> list[int]:
    with DatabaseConnection(path) as db, db.get_session() as session:
        events = [
            Progress(run_id=run_id, stage="s", percentage=float(i), timestamp=WHEN)
            for i in range(count)
        ]
        session.add_all(events)
        session.flush()
        return [int(event.id or 0) for event in events]


def test_upgrade_keeps_rows_and_stops_id_reuse_downgrade_restores_it(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    upgrade(str(path), "0002", backup=False)
    run_id = add_prompt_and_run_at_0002(path)
    assert add_raw_events(path, run_id, 5) == [1, 2, 3, 4, 5]
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM progress WHERE id = 5")
    assert add_raw_events(path, run_id, 1) == [5]  # before 0003: the deleted id is handed out again
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM progress WHERE id = 5")
    upgrade(str(path), "0003", backup=False)
    assert "AUTOINCREMENT" in progress_sql(path)
    assert "ck_progress_percentage_range" in progress_sql(path)
    assert "fk_progress_run_id_runs" in progress_sql(path)
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT id, percentage FROM progress ORDER BY id").fetchall()
        indexes = {
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'progress'"
            )
        }
    assert rows == [(1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0)]
    assert indexes >= {
        "ix_progress_run_id",
        "ix_progress_timestamp",
        "ix_progress_run_id_timestamp_id",
    }
    assert not [d for d in schema_differences(str(path)) if "AUTOINCREMENT" in str(d)]
    assert add_raw_events(path, run_id, 1) == [5]  # the mark is the largest id present
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM progress WHERE id = 5")
    assert add_raw_events(path, run_id, 1) == [6]  # never again
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM progress WHERE id = 6")
    upgrade(str(path), "head", backup=False)  # 0005 rebuilds the table again: the mark stays
    assert add_events(path, run_id, 1) == [7]
    downgrade(str(path), "0003", backup=False)  # and its downgrade too
    assert add_raw_events(path, run_id, 1) == [8]
    downgrade(str(path), "0002", backup=False)
    assert "AUTOINCREMENT" not in progress_sql(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM progress").fetchone() == (6,)
    upgrade(str(path), "head", backup=False)
    assert "AUTOINCREMENT" in progress_sql(path)


def test_a_higher_high_water_mark_survives_the_rebuild(tmp_path: Path) -> None:
    """A sequence row left from an AUTOINCREMENT table (e.g. re-upgrading) is not lowered."""
    path = tmp_path / "m.db"
    upgrade(str(path), "head", backup=False)
    with DatabaseConnection(path) as db:
        _, run_id = add_prompt_with_run(db)
    add_events(path, run_id, 3)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE sqlite_sequence SET seq = 40 WHERE name = 'progress'")
    downgrade(str(path), "0002", backup=False)
    with sqlite3.connect(path) as connection:  # as if the mark had outlived the old table
        connection.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('progress', 40)")
    upgrade(str(path), "head", backup=False)
    assert add_events(path, run_id, 1) == [41]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_servers_are_unchanged_and_round_trip(backend: str) -> None:
    require_backend(backend)
    with server_database(backend) as url:
        text = url.render_as_string(hide_password=False)
        upgrade(text, "head", backup=False)
        with DatabaseConnection(text) as db:
            _, run_id = add_prompt_with_run(db)
            with db.get_session() as session:
                session.add(Progress(run_id=run_id, stage="s", percentage=1.0, timestamp=WHEN))
        downgrade(text, "0002", backup=False)
        upgrade(text, "head", backup=False)
        assert schema_differences(text) == []
        with DatabaseConnection(text) as db, db.get_session() as session:
            assert len(session.exec(select(Progress)).all()) == 1
