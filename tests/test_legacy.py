"""Adopting databases written by the earlier implementation: every row kept, or refused untouched."""

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from cosmos_models import DatabaseConnection, MigrationError, Progress, Prompt, Run, init_database
from cosmos_models.db.migrate import schema_differences, upgrade
from cosmos_models.db.revisions import head_revision
from tests.backends import server_database
from tests.conftest import require_backend
from tests.legacy_fixtures import make_legacy_postgres, make_legacy_sqlite


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def legacy_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        connection.close()


def test_sample_is_adopted_keeping_every_row_exactly(tmp_path: Path) -> None:
    path = make_legacy_sqlite(tmp_path / "legacy.db")
    original = {table: legacy_rows(path, table) for table in ("prompts", "runs", "progress")}
    lines: list[str] = []
    result = upgrade(path, report=lines.append)
    assert result.before is None
    assert result.after == head_revision()
    assert result.adoption.copied == {"prompts": 2, "runs": 2, "progress": 6}
    assert result.adoption.orphan_progress == 1
    assert any("1 progress rows in legacy_v0_orphan_progress" in line for line in lines)
    assert result.backup_path is not None
    assert legacy_rows(result.backup_path, "progress") == original["progress"]
    assert schema_differences(path) == []

    with DatabaseConnection(path) as database, database.get_session() as session:
        prompts = {p.id: p for p in session.scalars(select(Prompt))}
        for row in original["prompts"]:
            prompt = prompts[str(row[0])]
            assert prompt.inputs == json.loads(str(row[4]))
            assert prompt.parameters == json.loads(str(row[5]))
            assert prompt.created_at == datetime.fromisoformat(str(row[3])).replace(tzinfo=UTC)
            assert prompt.created_at.tzinfo is UTC
        run = session.get(Run, "rs_20250104_120500_aaa111")
        assert run is not None
        assert run.outputs == {
            "result_video": "/outputs/city_night.mp4",
            "metrics": {"inference_time": 812.4},
        }
        assert run.run_metadata == {"user": "demo", "priority": "high"}
        assert [p.id for p in run.progress] == [1, 2, 3, 4, 5]
        # Numbered in the order the earlier implementation read them (timestamp, then id).
        assert [p.seq for p in run.progress] == [1, 2, 3, 4, 5]
        last = run.progress[-1]
        assert (run.progress_count, run.latest_seq) == (5, 5)
        assert (run.latest_stage, run.latest_percentage, run.latest_at) == (
            last.stage,
            last.percentage,
            last.timestamp,
        )
        assert run.completed_at == datetime(2025, 1, 4, 12, 20, tzinfo=UTC)
        orphan = session.execute(text("SELECT * FROM legacy_v0_orphan_progress")).all()
        assert [tuple(r) for r in orphan] == [tuple(r) for r in original["progress"] if r[0] == 7]
        # new rows continue the id sequence
        session.add(Progress(run_id=run.id, stage="x", percentage=1.0, message="new"))
        session.flush()
        new_id = session.scalar(select(Progress.id).where(Progress.message == "new"))
        assert new_id is not None
        assert new_id > 6
        assert session.scalar(select(Progress.seq).where(Progress.id == new_id)) == 6


def test_harder_cases_nulls_orphan_runs_unicode_big_numbers(tmp_path: Path) -> None:
    path = make_legacy_sqlite(tmp_path / "hard.db", harder=True)
    result = upgrade(path)
    report = result.adoption
    assert report.orphan_runs == 1
    assert report.orphan_progress == 2  # the sample's, and the orphan run's
    assert report.null_timestamps == 4  # prompt created_at, run created/updated, progress timestamp
    with DatabaseConnection(path) as database, database.get_session() as session:
        prompt = session.get(Prompt, "ps_null_time")
        assert prompt is not None
        assert prompt.created_at == datetime(1970, 1, 1, tzinfo=UTC)
        assert prompt.inputs["unicode"] == "é中"
        assert prompt.inputs["big"] == 12345678901234567890
        assert prompt.parameters["nested"] == {"l1": {"l2": [1, 2.5, None, True]}}
        nulls = session.execute(
            text(
                "SELECT table_name, row_id, column_name FROM legacy_v0_null_timestamps ORDER BY 1, 3"
            )
        ).all()
        assert [tuple(r) for r in nulls] == [
            ("progress", "9", "timestamp"),
            ("prompts", "ps_null_time", "created_at"),
            ("runs", "rs_null_times", "created_at"),
            ("runs", "rs_null_times", "updated_at"),
        ]
        orphan_runs = session.execute(text("SELECT id FROM legacy_v0_orphan_runs")).scalars().all()
        assert orphan_runs == ["rs_orphan"]
        assert session.get(Run, "rs_orphan") is None
        assert session.get(Progress, 9) is not None


@pytest.mark.parametrize(
    ("extra_sql", "problem"),
    [
        ("ALTER TABLE runs ADD COLUMN colour TEXT;", "unexpected: ['colour']"),
        (
            "UPDATE runs SET status = 'queued' WHERE id = 'rs_20250104_130500_bbb222';",
            "runs.status",
        ),
        (
            "UPDATE prompts SET inputs = '[1, 2]' WHERE id = 'ps_20250104_120000_abc123';",
            "prompts.inputs is not a JSON object",
        ),
        (
            "UPDATE prompts SET parameters = 'not json' WHERE id = 'ps_20250104_120000_abc123';",
            "prompts.parameters",
        ),
        ("UPDATE progress SET timestamp = '04/01/2025' WHERE id = 1;", "progress.timestamp"),
        (f"UPDATE prompts SET model_type = '{'m' * 101}';", "longer than 100"),
        ("DROP TABLE progress;", "not progress"),
    ],
)
def test_unadoptable_files_are_refused_byte_for_byte_untouched(
    tmp_path: Path, extra_sql: str, problem: str
) -> None:
    path = make_legacy_sqlite(tmp_path / "bad.db", extra_sql=extra_sql)
    before = md5(path)
    with pytest.raises(MigrationError, match="Nothing was changed") as caught:
        init_database(path)
    assert problem in str(caught.value)
    assert md5(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


def test_adoption_is_refused_in_the_database_too(tmp_path: Path) -> None:
    """Without the file pre-check (``:memory:``), the in-transaction check refuses the same."""
    with DatabaseConnection(":memory:") as database:
        with database.engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE prompts (id VARCHAR PRIMARY KEY)")
        with pytest.raises(MigrationError, match="not progress, runs"):
            database.create_tables()


def test_postgresql_legacy_database_is_adopted() -> None:
    require_backend("postgresql")
    with server_database("postgresql") as url:
        make_legacy_postgres(url)
        result = upgrade(url)
        assert result.adoption.copied == {"prompts": 3, "runs": 2, "progress": 6}
        assert result.adoption.null_timestamps == 1
        assert result.backup_path is None
        assert schema_differences(url) == []
        with DatabaseConnection(url) as database, database.get_session() as session:
            run = session.get(Run, "rs_20250104_120500_aaa111")
            assert run is not None
            assert run.outputs["metrics"] == {"inference_time": 812.4}
            assert run.created_at == datetime(2025, 1, 4, 12, 5, tzinfo=UTC)
            assert [p.percentage for p in run.progress] == [0.0, 100.0, 50.0, 100.0, 100.0]
            assert [p.seq for p in run.progress] == [1, 2, 3, 4, 5]
            assert (run.progress_count, run.latest_seq, run.latest_percentage) == (5, 5, 100.0)
            session.add(Progress(run_id=run.id, stage="x", percentage=1.0, message="new"))
            session.flush()
            assert session.scalar(select(Progress.id).order_by(Progress.id.desc()).limit(1)) == 7


def test_failed_adoption_leaves_the_file_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the tables were renamed and copied rolls back to the very same bytes."""
    import cosmos_models.db.legacy as legacy

    path = make_legacy_sqlite(tmp_path / "fail.db", harder=True)
    before = md5(path)
    real_drop = legacy._record_null_timestamps

    def fail_midway(connection: object) -> int:
        real_drop(connection)  # type: ignore[arg-type]
        raise RuntimeError("power cut")

    monkeypatch.setattr(legacy, "_record_null_timestamps", fail_midway)
    with pytest.raises(MigrationError, match="power cut"):
        upgrade(path)
    assert md5(path) == before
    backups = list(tmp_path.glob("fail.backup-legacy-*.db"))
    assert len(backups) == 1
    assert legacy_rows(backups[0], "runs") == legacy_rows(path, "runs")


def test_sqlite_times_without_microseconds_are_padded(tmp_path: Path) -> None:
    path = make_legacy_sqlite(
        tmp_path / "short.db",
        extra_sql="UPDATE runs SET created_at = '2025-01-04 12:05:00' WHERE id = 'rs_20250104_120500_aaa111';",
    )
    upgrade(path)
    connection = sqlite3.connect(path)
    try:
        stored = connection.execute(
            "SELECT created_at FROM runs WHERE id = 'rs_20250104_120500_aaa111'"
        ).fetchone()[0]
    finally:
        connection.close()
    assert stored == "2025-01-04 12:05:00.000000"
    with DatabaseConnection(path) as database, database.get_session() as session:
        run = session.get(Run, "rs_20250104_120500_aaa111")
        assert run is not None
        assert run.created_at == datetime(2025, 1, 4, 12, 5, tzinfo=UTC)
