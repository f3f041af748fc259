"""Statistics, prune (with crash safety) and restore, on every backend."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cosmos_models import DatabaseConnection, Progress, Prompt, Run, RunStatus
from cosmos_models.services.archive import Archive, ArchiveError, read_records
from cosmos_models.services.maintenance import parse_duration, parse_statuses, prune
from cosmos_models.services.restore import RestoreConflictError, restore
from cosmos_models.services.stats import database_stats
from tests.factories import make_progress, make_prompt, make_run

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def fill(db: DatabaseConnection, *, old_runs: int = 4, progress_each: int = 3) -> None:
    """One prompt; old final runs, an old running run, and a recent final run."""
    old = NOW - timedelta(days=60)
    with db.get_session() as session:
        prompt = make_prompt(id="ps_keep", created_at=old)
        session.add(prompt)
        runs = [
            make_run(
                prompt,
                id=f"rs_old_{i}",
                status=RunStatus.COMPLETED,
                created_at=old,
                completed_at=old + timedelta(seconds=i),
            )
            for i in range(old_runs)
        ]
        runs.append(make_run(prompt, id="rs_old_running", status=RunStatus.RUNNING, created_at=old))
        runs.append(
            make_run(
                prompt,
                id="rs_new_failed",
                status=RunStatus.FAILED,
                created_at=NOW,
                completed_at=NOW,
            )
        )
        session.add_all(runs)
        session.flush()
        for run in runs:
            for step in range(progress_each):
                session.add(
                    make_progress(run, step * 10.0, timestamp=old + timedelta(seconds=step))
                )


def counts(db: DatabaseConnection) -> tuple[int, int, int]:
    with db.get_session(read_only=True) as session:
        return (
            session.scalar(select(func.count()).select_from(Prompt)) or 0,
            session.scalar(select(func.count()).select_from(Run)) or 0,
            session.scalar(select(func.count()).select_from(Progress)) or 0,
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        (" 5s ", timedelta(seconds=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-3d", "3y", "1.5d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_statuses() -> None:
    assert parse_statuses(["completed", " failed"]) == (RunStatus.COMPLETED, RunStatus.FAILED)
    with pytest.raises(ValueError, match="not final"):
        parse_statuses(["running"])
    with pytest.raises(ValueError, match="'bogus' is not one of"):
        parse_statuses(["bogus"])


def test_stats(db: DatabaseConnection) -> None:
    empty = database_stats(db)
    assert empty.rows == {"prompts": 0, "runs": 0, "progress": 0}
    assert empty.oldest["runs"] is None
    fill(db)
    stats = database_stats(db)
    assert stats.rows == {"prompts": 1, "runs": 6, "progress": 18}
    assert stats.runs_by_status == {"completed": 4, "running": 1, "failed": 1}
    assert stats.oldest["runs"] == NOW - timedelta(days=60)
    assert stats.newest["runs"] == NOW
    assert stats.newest["runs"].tzinfo is UTC  # type: ignore[union-attr]
    assert stats.size_bytes is not None
    assert stats.size_bytes > 0


def test_prune_dry_run_changes_nothing(db: DatabaseConnection) -> None:
    fill(db)
    result = prune(db, older_than=timedelta(days=30), dry_run=True, now=NOW)
    assert (result.runs, result.progress) == (4, 12)
    assert counts(db) == (1, 6, 18)


def test_prune_with_archive_then_restore(db: DatabaseConnection, tmp_path: Path) -> None:
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    result = prune(db, older_than=timedelta(days=30), archive_path=path, batch_size=3, now=NOW)
    assert (result.runs, result.progress, result.batches) == (4, 12, 2)
    assert result.archived == 1 + 4 + 12
    assert counts(db) == (1, 2, 6)
    assert prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW).runs == 0
    restored = restore(db, path)
    assert restored.restored == {"prompts": 0, "runs": 4, "progress": 12}
    assert restored.already_present == 1
    assert counts(db) == (1, 6, 18)
    with db.get_session() as session:
        run = session.get(Run, "rs_old_2")
        assert run is not None
        assert run.completed_at == NOW - timedelta(days=60) + timedelta(seconds=2)
        assert run.status is RunStatus.COMPLETED
        assert run.execution_config == {"gpu_node": "gpu-001"}
        assert [p.percentage for p in run.progress] == [0.0, 10.0, 20.0]
        session.add(make_progress(run, 99.0))  # ids continue after a restore
    assert restore(db, path).already_present == 17


def test_prune_only_the_statuses_asked(db: DatabaseConnection) -> None:
    fill(db)
    assert prune(db, older_than=timedelta(days=30), statuses=[RunStatus.FAILED], now=NOW).runs == 0
    assert prune(
        db,
        older_than=timedelta(days=0),
        statuses=[RunStatus.FAILED],
        now=NOW + timedelta(seconds=1),
    ).run_ids == ["rs_new_failed"]


def test_prune_refuses_bad_arguments(db: DatabaseConnection, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not final"):
        prune(db, older_than=timedelta(days=1), statuses=[RunStatus.RUNNING])
    with pytest.raises(ValueError, match="batch_size"):
        prune(db, older_than=timedelta(days=1), batch_size=0)
    with pytest.raises(FileNotFoundError):
        restore(db, tmp_path / "missing.jsonl.gz")


PRUNE_SCRIPT = """
import sys
from datetime import timedelta
from pathlib import Path
from cosmos_models import DatabaseConnection
from cosmos_models.services.maintenance import prune
with DatabaseConnection(sys.argv[1]) as db:
    prune(db, older_than=timedelta(days=1), archive_path=Path(sys.argv[2]), batch_size=int(sys.argv[3]))
"""


def _seed_many(db: DatabaseConnection, runs: int, progress_each: int) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    with db.get_session() as session:
        prompt = make_prompt(id="ps_many", created_at=old)
        session.add(prompt)
        for i in range(runs):
            session.add(
                make_run(
                    prompt,
                    id=f"rs_{i:05d}",
                    status=RunStatus.COMPLETED,
                    created_at=old,
                    completed_at=old,
                )
            )
        session.flush()
        for i in range(runs):
            for step in range(progress_each):
                session.add(
                    Progress(run_id=f"rs_{i:05d}", stage="s", percentage=float(step), timestamp=old)
                )


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_prune_killed_midway_loses_nothing(
    backend: str, db: DatabaseConnection, tmp_path: Path
) -> None:
    """SIGKILL a prune several times at different moments; rerun; archive + database = original."""
    _seed_many(db, runs=300, progress_each=4)
    url = db.url.render_as_string(hide_password=False)
    archive = tmp_path / "killed.jsonl.gz"
    for _ in range(3):
        size = archive.stat().st_size if archive.exists() else 0
        process = subprocess.Popen([sys.executable, "-c", PRUNE_SCRIPT, url, str(archive), "5"])
        deadline = time.monotonic() + 60
        # Pull the plug as soon as this round has archived something: mid-prune, at whatever
        # point of the next batch (archiving, fsync, deleting, committing) the process is in.
        while (
            not archive.exists() or archive.stat().st_size == size
        ) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    _, runs_left, _ = counts(db)
    assert 0 < runs_left < 300, "the kills did not land mid-prune"
    subprocess.run([sys.executable, "-c", PRUNE_SCRIPT, url, str(archive), "50"], check=True)
    keys = Archive(archive).keys
    records = list(read_records(archive))
    assert len(records) == len(keys)  # nothing recorded twice
    _, runs_left, progress_left = counts(db)
    assert runs_left == 0
    assert progress_left == 0
    assert sum(1 for key in keys if key[0] == "runs") == 300
    assert sum(1 for key in keys if key[0] == "progress") == 1200
    restore(db, archive)
    assert counts(db) == (1, 300, 1200)


# -- restore: validation, identity across databases, conflicts ---------------------------------


def append_member(path: Path, *records: dict[str, Any]) -> None:
    """Add a hand-made batch to an archive (no checks: that is what restore must do)."""
    payload = "".join(json.dumps(record) + "\n" for record in records)
    with path.open("ab") as handle:
        handle.write(gzip.compress(payload.encode()))


def archived(path: Path, table: str) -> dict[str, Any]:
    return next(
        dict(line.record["row"])
        for line in read_records(path)
        if line.record and line.record["table"] == table
    )


def bad_rows(path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    prompt, run, event = (archived(path, table) for table in ("prompts", "runs", "progress"))
    return {
        "300-char model_type": (
            {"table": "prompts", "row": {**prompt, "id": "ps_new", "model_type": "x" * 300}},
            "field 'model_type': String should have at most 100 characters",
        ),
        "list for an object": (
            {"table": "runs", "row": {**run, "id": "rs_new", "execution_config": [1, 2]}},
            "field 'execution_config'",
        ),
        "naive timestamp": (
            {"table": "progress", "row": {**event, "timestamp": "2025-01-01T00:00:00"}},
            "field 'timestamp': Value error, must be timezone-aware",
        ),
        "unknown table": ({"table": "users", "row": run}, "field 'table': unknown table 'users'"),
        "unknown column": (
            {"table": "runs", "row": {**run, "id": "rs_new", "bogus": 1}},
            "field 'bogus' is not a column of runs",
        ),
        "missing column": (
            {"table": "runs", "row": {k: v for k, v in run.items() if k != "created_at"}},
            "field 'created_at' is missing",
        ),
        "null progress id": (
            {"table": "progress", "row": {**event, "id": None}},
            "field 'id' is missing",
        ),
        "bad status": (
            {"table": "runs", "row": {**run, "id": "rs_new", "status": "exploded"}},
            "field 'status'",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "300-char model_type",
        "list for an object",
        "naive timestamp",
        "unknown table",
        "unknown column",
        "missing column",
        "bad status",
        "null progress id",
    ],
)
def test_restore_validates_every_row_and_writes_nothing_on_error(
    case: str, db: DatabaseConnection, tmp_path: Path
) -> None:
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW)
    record, problem = bad_rows(path)[case]
    append_member(path, record)
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match=r"member 3, line 19\b.*" + re.escape(problem)):
        restore(db, path)
    assert counts(db) == (1, 2, 6)  # the valid rows before the bad one were not written either
    assert path.read_bytes() == before


def test_progress_ids_are_never_reused_so_a_second_prune_archives_everything(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    """On SQLite without AUTOINCREMENT the second run's events got the pruned ids and were lost."""
    old = NOW - timedelta(days=60)
    path = tmp_path / "archive.jsonl.gz"
    event_ids: list[list[int]] = []
    for name in ("a", "b"):
        with db.get_session() as session:
            prompt = make_prompt(id=f"ps_{name}", created_at=old)
            run = make_run(
                prompt,
                id=f"rs_{name}",
                status=RunStatus.COMPLETED,
                created_at=old,
                completed_at=old,
            )
            session.add_all([prompt, run])
            session.flush()
            events = [make_progress(run, float(i), timestamp=old) for i in range(3)]
            session.add_all(events)
            session.flush()
            event_ids.append([int(event.id or 0) for event in events])
        assert prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW).progress == 3
    assert min(event_ids[1]) > max(event_ids[0])
    assert counts(db) == (2, 0, 0)
    with DatabaseConnection(tmp_path / "fresh.db") as fresh:
        fresh.create_tables()
        result = restore(fresh, path)
        assert result.restored == {"prompts": 2, "runs": 2, "progress": 6}
        assert counts(fresh) == (2, 2, 6)


def test_restore_into_another_database_stores_every_row(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    """The target uses the archived progress ids for its own events: those get new ids."""
    with DatabaseConnection(tmp_path / "source.db") as source:
        source.create_tables()
        fill(source)
        path = tmp_path / "archive.jsonl.gz"
        prune(source, older_than=timedelta(days=30), archive_path=path, now=NOW)
    with db.get_session() as session:
        prompt = make_prompt(id="ps_target")
        run = make_run(prompt, id="rs_target")
        session.add_all([prompt, run])
        session.flush()
        # Explicit ids: a server's sequence has moved on in earlier tests, the target must
        # really hold the archived ids.
        session.add_all([make_progress(run, float(i), id=i + 1) for i in range(20)])
    result = restore(db, path)
    assert result.restored == {"prompts": 1, "runs": 4, "progress": 12}
    assert result.already_present == 0
    assert result.renumbered == 12
    assert counts(db) == (2, 5, 32)
    again = restore(db, path)
    assert again.restored == {"prompts": 0, "runs": 0, "progress": 0}
    assert again.present == {"prompts": 1, "runs": 4, "progress": 12}
    with db.get_session() as session:
        restored_run = session.get(Run, "rs_old_1")
        assert restored_run is not None
        assert [p.percentage for p in restored_run.progress] == [0.0, 10.0, 20.0]
        session.add(make_progress(restored_run, 99.0))  # the id sequence is past every id


def test_restore_refuses_an_id_with_other_content(db: DatabaseConnection, tmp_path: Path) -> None:
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW)
    with db.get_session() as session:
        prompt = session.get(Prompt, "ps_keep")
        assert prompt is not None
        prompt.prompt_text = "changed after archiving"
    with pytest.raises(RestoreConflictError, match=r"prompt 'ps_keep'.*'prompt_text'"):
        restore(db, path)
    assert counts(db) == (1, 2, 6)


def test_an_archive_with_two_versions_of_a_run_is_refused(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW)
    run = archived(path, "runs")
    append_member(path, {"table": "runs", "row": {**run, "outputs": {"other": 1}}})
    with pytest.raises(RestoreConflictError, match="two different runs rows"):
        restore(db, path)
    assert counts(db) == (1, 2, 6)


def test_repeated_identical_events_are_restored_as_often_as_archived(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=60)
    with db.get_session() as session:
        prompt = make_prompt(id="ps_rep", created_at=old)
        run = make_run(
            prompt, id="rs_rep", status=RunStatus.COMPLETED, created_at=old, completed_at=old
        )
        session.add_all([prompt, run])
        session.flush()
        session.add_all([make_progress(run, 50.0, timestamp=old) for _ in range(3)])
    path = tmp_path / "archive.jsonl.gz"
    assert prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW).archived == 5
    assert restore(db, path).restored["progress"] == 3
    with db.get_session() as session:  # one more identical event, then prune again
        session.add(
            Progress(
                run_id="rs_rep",
                stage="uploading",
                percentage=50.0,
                message="Starting upload",
                timestamp=old,
            )
        )
    assert prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW).archived == 1
    assert restore(db, path).restored == {"prompts": 0, "runs": 1, "progress": 4}
    assert counts(db) == (1, 1, 4)


def test_a_version_1_archive_is_restored(db: DatabaseConnection, tmp_path: Path) -> None:
    """Archives written before the header existed hold the same records: restore reads them."""
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW)
    # Added by migration 0002 (lifecycle) and 0005 (seq and the run's progress summary).
    old_columns = {"error_message", "worker_id", "heartbeat_at", "seq", "progress_count"}
    records = [
        {
            "table": line.record["table"],
            "row": {
                k: v
                for k, v in line.record["row"].items()
                if k not in old_columns and not k.startswith("latest_")
            },
        }
        for line in read_records(path)
        if line.record
    ]
    legacy = tmp_path / "v1.jsonl.gz"
    append_member(legacy, *records)
    assert restore(db, legacy).restored == {"prompts": 0, "runs": 4, "progress": 12}
    assert counts(db) == (1, 6, 18)
    # Unnumbered events are numbered in time order and their runs summarised as if recorded.
    with db.get_session() as session:
        for run in session.scalars(select(Run)).all():
            events = sorted(run.progress, key=lambda event: event.seq or 0)
            assert [event.seq for event in events] == list(range(1, len(events) + 1))
            assert [event.timestamp for event in events] == sorted(e.timestamp for e in events)
            assert run.progress_count == len(events)
            assert run.latest_seq == len(events)
            if events:
                assert run.latest_progress_id == events[-1].id
                assert run.latest_stage == events[-1].stage
    assert restore(db, legacy).restored == {"prompts": 0, "runs": 0, "progress": 0}
    with pytest.raises(ArchiveError, match="version 1"):
        prune(db, older_than=timedelta(days=30), archive_path=legacy, now=NOW)
    assert counts(db) == (1, 6, 18)  # refused before anything was deleted


def test_an_event_stored_with_other_content_at_the_same_seq_is_a_conflict(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    """Two events of one run with one seq cannot both be kept: the restore is refused whole."""
    fill(db)
    path = tmp_path / "archive.jsonl.gz"
    prune(db, older_than=timedelta(days=30), archive_path=path, now=NOW)
    restore(db, path)
    with db.get_session() as session:
        event = session.scalars(select(Progress).order_by(Progress.id)).first()  # type: ignore[arg-type]
        assert event is not None
        event.message = "changed after the restore"
    before = counts(db)
    with pytest.raises(RestoreConflictError, match="other content"):
        restore(db, path)
    assert counts(db) == before
