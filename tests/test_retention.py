"""Event retention (``prune --progress-older-than``): old events go, runs and summaries stay.

On every backend: what is deleted and what is kept (the dashboards' latest state above all), the
archive of such a prune (events plus their run and prompt as context rows) and its restore into
the same database, twice, and into a fresh database of another backend.
"""

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, update

from cosmos_models import DatabaseConnection, Progress, RunStatus, record_progress_batch
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.services.archive import Archive, CorruptArchiveError, read_records
from cosmos_models.services.maintenance import prune
from cosmos_models.services.progress_queries import latest_progress
from cosmos_models.services.restore import restore
from tests.concurrency import in_threads, progress_events
from tests.conftest import _empty_tables, connect
from tests.factories import make_progress, make_prompt, make_run
from tests.test_cli import cli
from tests.test_maintenance import counts

NOW = datetime(2025, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=60)
RECENT = NOW - timedelta(days=1)
MONTH = timedelta(days=30)
RUN_IDS = ["rs_active", "rs_done", "rs_fresh", "rs_gone"]
# Events per run: (old, recent). rs_done's latest event is old, so retention deletes it.
EVENTS = {"rs_active": (3, 2), "rs_done": (4, 0), "rs_fresh": (0, 2), "rs_gone": (2, 0)}


def fill(db: DatabaseConnection) -> None:
    """A running run with old and recent events, a recently finished run whose events are all
    old, a running run with recent events only, and a final run finished long ago."""
    with db.get_session() as session:
        prompt = make_prompt(id="ps_retention", created_at=OLD)
        runs = {
            "rs_active": make_run(prompt, id="rs_active", status=RunStatus.RUNNING),
            "rs_done": make_run(prompt, id="rs_done", status=RunStatus.COMPLETED),
            "rs_fresh": make_run(prompt, id="rs_fresh", status=RunStatus.RUNNING),
            "rs_gone": make_run(prompt, id="rs_gone", status=RunStatus.COMPLETED),
        }
        for run in runs.values():
            run.created_at = run.updated_at = OLD
        runs["rs_done"].completed_at = RECENT
        runs["rs_gone"].completed_at = OLD
        session.add(prompt)
        session.add_all(runs.values())
        session.flush()
        for run_id, (old, recent) in EVENTS.items():
            moments = [OLD + timedelta(seconds=i) for i in range(old)]
            moments += [RECENT + timedelta(seconds=i) for i in range(recent)]
            for step, moment in enumerate(moments):
                session.add(
                    make_progress(
                        runs[run_id], 10.0 * step, message=f"{run_id} {step}", timestamp=moment
                    )
                )
                session.flush()  # one event at a time: seq follows the order above


def summaries(db: DatabaseConnection) -> dict[str, tuple[Any, ...]]:
    """Each run's summary columns and updated_at, by run id."""
    with db.engine.connect() as connection:
        return {
            row.id: (
                row.progress_count,
                row.latest_seq,
                row.latest_stage,
                row.latest_percentage,
                row.latest_message,
                row.latest_at,
                row.latest_progress_id,
                row.updated_at,
            )
            for row in connection.execute(select(RUNS))
        }


def stored_seqs(db: DatabaseConnection) -> dict[str, list[int]]:
    with db.engine.connect() as connection:
        found: dict[str, list[int]] = {}
        for run_id, seq in connection.execute(
            select(PROGRESS.c.run_id, PROGRESS.c.seq).order_by(PROGRESS.c.run_id, PROGRESS.c.seq)
        ):
            found.setdefault(run_id, []).append(seq)
        return found


def dashboard(db: DatabaseConnection) -> dict[str, Any]:
    return {run_id: read.model_dump() for run_id, read in latest_progress(db, RUN_IDS).items()}


def test_prune_events_only_keeps_runs_and_their_summaries(db: DatabaseConnection) -> None:
    fill(db)
    before, shown = summaries(db), dashboard(db)
    assert set(shown) == set(RUN_IDS)
    result = prune(db, progress_older_than=MONTH, batch_size=2, now=NOW)
    assert (result.runs, result.progress, result.expired_progress) == (0, 0, 9)
    assert result.batches == 5
    assert counts(db) == (1, 4, 4)  # every run kept, the recent events only
    assert stored_seqs(db) == {"rs_active": [4, 5], "rs_fresh": [1, 2]}
    after = summaries(db)
    for run_id, (_old, recent) in EVENTS.items():
        # The count is of the events stored; everything else is as it was, updated_at too.
        assert after[run_id] == (recent, *before[run_id][1:]), run_id
    assert dashboard(db) == shown  # rs_done's and rs_gone's latest events are gone, not their state
    assert prune(db, progress_older_than=MONTH, now=NOW).expired_progress == 0
    # latest_seq never goes down: the next event of a run is numbered after every deleted one.
    with db.get_session() as session:
        event = Progress(run_id="rs_active", stage="inference", percentage=60.0, timestamp=NOW)
        session.add(event)
    assert event.seq == 6
    assert summaries(db)["rs_active"][:2] == (3, 6)


def test_events_another_prune_took_meanwhile_are_neither_counted_nor_subtracted(
    db: DatabaseConnection,
) -> None:
    """Between choosing a batch and locking its runs, a second prune deletes the same events."""
    fill(db)
    original = DatabaseConnection.connect
    racer: list[int] = []

    @contextmanager
    def racing(self: DatabaseConnection, *, read_only: bool = False) -> Iterator[Connection]:
        with original(self, read_only=read_only) as connection:
            yield connection
        if read_only and not racer:
            racer.append(0)  # first, so that the racer's own reads pass straight through
            racer[0] = prune(self, progress_older_than=MONTH, now=NOW).expired_progress

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseConnection, "connect", racing)
        ours = prune(db, progress_older_than=MONTH, batch_size=2, now=NOW)
    assert racer == [9]
    assert (ours.expired_progress, ours.batches) == (0, 1)
    assert {run_id: summary[0] for run_id, summary in summaries(db).items()} == {
        run_id: recent for run_id, (_old, recent) in EVENTS.items()
    }


def test_retention_with_whole_runs_counts_each_event_once(db: DatabaseConnection) -> None:
    fill(db)
    both = {"older_than": MONTH, "progress_older_than": MONTH, "now": NOW}
    dry = prune(db, dry_run=True, **both)  # type: ignore[arg-type]
    assert (dry.runs, dry.progress, dry.expired_progress, dry.dry_run) == (1, 2, 7, True)
    assert prune(db, progress_older_than=MONTH, dry_run=True, now=NOW).expired_progress == 9
    assert (
        prune(db, progress_older_than=timedelta(days=90), dry_run=True, now=NOW).expired_progress
        == 0
    )
    assert counts(db) == (1, 4, 13)  # a dry run deletes nothing
    result = prune(db, **both)  # type: ignore[arg-type]
    assert (result.runs, result.progress, result.expired_progress) == (1, 2, 7)
    assert result.run_ids == ["rs_gone"]
    assert counts(db) == (1, 3, 4)


def test_bad_arguments_are_refused(db: DatabaseConnection, tmp_path: Path) -> None:
    fill(db)
    with pytest.raises(ValueError, match="older_than, progress_older_than or both"):
        prune(db)
    with pytest.raises(ValueError, match="progress_older_than must be a non-negative"):
        prune(db, progress_older_than=timedelta(days=-1))
    with pytest.raises(ValueError, match="older_than must be a non-negative"):
        prune(db, older_than=timedelta(seconds=-1), progress_older_than=MONTH)
    with pytest.raises(ValueError, match="batch_size"):
        prune(db, progress_older_than=MONTH, batch_size=0)
    assert counts(db) == (1, 4, 13)
    assert not list(tmp_path.glob("*.gz"))


def archive_lines(path: Path) -> list[dict[str, Any]]:
    return [line.record for line in read_records(path) if line.record is not None]


def test_archive_then_restore_loses_and_doubles_nothing(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    fill(db)
    shown, before = dashboard(db), summaries(db)
    path = tmp_path / "events.jsonl.gz"
    result = prune(db, progress_older_than=MONTH, archive_path=path, batch_size=4, now=NOW)
    assert result.expired_progress == 9
    lines = archive_lines(path)
    # Each deleted event once; each run and the prompt once, as context (later batches skip them).
    assert sorted(
        (line["row"]["run_id"], line["row"]["seq"]) for line in lines if line["table"] == "progress"
    ) == [("rs_active", 1), ("rs_active", 2), ("rs_active", 3)] + [
        ("rs_done", seq) for seq in (1, 2, 3, 4)
    ] + [("rs_gone", 1), ("rs_gone", 2)]
    context = sorted((line["table"], line["row"]["id"]) for line in lines if line.get("context"))
    assert context == [("prompts", "ps_retention")] + [
        ("runs", run_id) for run_id in ("rs_active", "rs_done", "rs_gone")
    ]
    assert result.archived == len(lines) == 13
    assert dashboard(db) == shown
    # The kept run goes on changing: a restore must not refuse because it differs now.
    with db.engine.begin() as connection:
        connection.execute(
            update(RUNS)
            .where(RUNS.c.id == "rs_active")
            .values(heartbeat_at=NOW, worker_id="gpu-007", updated_at=RUNS.c.updated_at)
        )
    restored = restore(db, path, batch_size=2)
    assert restored.restored == {"prompts": 0, "runs": 0, "progress": 9}
    assert (restored.already_present, restored.context, restored.renumbered) == (0, 0, 0)
    assert counts(db) == (1, 4, 13)
    assert summaries(db) == before
    assert dashboard(db) == shown
    again = restore(db, path)
    assert again.restored == {"prompts": 0, "runs": 0, "progress": 0}
    assert again.present == {"prompts": 0, "runs": 0, "progress": 9}
    assert summaries(db) == before
    # A rerun of the prune archives nothing twice.
    assert prune(db, progress_older_than=MONTH, archive_path=path, now=NOW).archived == 0
    assert len(archive_lines(path)) == 13


def other_backend(backend: str) -> str:
    return "mariadb" if backend.startswith("sqlite") else "sqlite-file"


def test_restore_into_a_fresh_database_of_another_backend(
    db: DatabaseConnection, backend: str, tmp_path: Path
) -> None:
    """A run archived as context, then pruned whole into the same archive: its row wins."""
    fill(db)
    path = tmp_path / "events.jsonl.gz"
    prune(db, progress_older_than=MONTH, archive_path=path, now=NOW)
    # rs_active finishes after the retention prune, then is pruned whole into the same archive:
    # its row is archived again (not skipped as already there), now completed.
    with db.engine.begin() as connection:
        connection.execute(
            update(RUNS)
            .where(RUNS.c.id == "rs_active")
            .values(status=RunStatus.COMPLETED, completed_at=NOW)
        )
    whole = prune(db, older_than=timedelta(0), archive_path=path, now=NOW + timedelta(days=1))
    assert sorted(whole.run_ids) == ["rs_active", "rs_done", "rs_gone"]
    assert (whole.archived, whole.progress) == (1 + 3 + 2, 2)  # prompt, runs, recent events
    (tmp_path / "fresh").mkdir()
    fresh = connect(other_backend(backend), tmp_path / "fresh")
    try:
        fresh.create_tables()
        _empty_tables(fresh)
        result = restore(fresh, path)
        # Each run was pruned whole at last: rows, so no context row is needed.
        assert result.restored == {"prompts": 1, "runs": 3, "progress": 11}
        assert result.context == 0
        with fresh.engine.connect() as connection:
            status = connection.execute(
                select(RUNS.c.status).where(RUNS.c.id == "rs_active")
            ).scalar_one()
        assert status == RunStatus.COMPLETED
        assert {k: v[:2] for k, v in summaries(fresh).items()} == {
            "rs_active": (5, 5),
            "rs_done": (4, 4),
            "rs_gone": (2, 2),
        }
        assert sum(restore(fresh, path).restored.values()) == 0
    finally:
        _empty_tables(fresh)
        fresh.close()


def test_a_retention_archive_alone_restores_into_an_empty_database(
    db: DatabaseConnection, backend: str, tmp_path: Path
) -> None:
    fill(db)
    shown = dashboard(db)
    path = tmp_path / "events.jsonl.gz"
    prune(db, progress_older_than=MONTH, archive_path=path, now=NOW)
    (tmp_path / "fresh").mkdir()
    fresh = connect(other_backend(backend), tmp_path / "fresh")
    try:
        fresh.create_tables()
        _empty_tables(fresh)
        result = restore(fresh, path)
        assert result.restored == {"prompts": 1, "runs": 3, "progress": 9}
        assert result.context == 4
        assert stored_seqs(fresh) == {
            "rs_active": [1, 2, 3],
            "rs_done": [1, 2, 3, 4],
            "rs_gone": [1, 2],
        }
        # Counts are of the events stored here; latest_seq and the latest state are the run's.
        restored = summaries(fresh)
        assert {k: v[:2] for k, v in restored.items()} == {
            "rs_active": (3, 5),
            "rs_done": (4, 4),
            "rs_gone": (2, 2),
        }
        on_fresh = dashboard(fresh)
        for run_id in ("rs_done", "rs_gone"):
            assert on_fresh[run_id] == shown[run_id]
        assert {k: v for k, v in on_fresh["rs_active"].items() if k != "id"} == {
            k: v for k, v in shown["rs_active"].items() if k != "id"
        }
        again = restore(fresh, path)
        assert sum(again.restored.values()) == again.context == 0
        assert summaries(fresh) == restored
    finally:
        _empty_tables(fresh)
        fresh.close()


def append_member(path: Path, *records: dict[str, Any]) -> None:
    with path.open("ab") as handle:
        handle.write(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))


@pytest.mark.parametrize(
    "record",
    [
        {"table": "runs", "row": {"id": "rs_x"}, "context": False},
        {"table": "runs", "row": {"id": "rs_x"}, "context": "yes"},
        {"table": "progress", "row": {"id": 1}, "context": True},
        {"table": "runs", "row": {"id": "rs_x"}, "kept": True},
    ],
)
def test_a_bad_context_mark_makes_the_archive_corrupt(
    db: DatabaseConnection, tmp_path: Path, record: dict[str, Any]
) -> None:
    fill(db)
    path = tmp_path / "events.jsonl.gz"
    prune(db, progress_older_than=MONTH, archive_path=path, now=NOW)
    append_member(path, record)
    field = "'context'" if "context" in record else "record"
    with pytest.raises(CorruptArchiveError, match=f"member 3, line 1.*{field}"):
        restore(db, path)
    with pytest.raises(CorruptArchiveError):
        Archive(path)
    assert counts(db) == (1, 4, 4)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql", "mariadb"])
def test_command_line(
    backend: str, db: DatabaseConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(db)
    url = db.url.render_as_string(hide_password=False)
    code, out, _ = cli(
        capsys,
        "prune",
        "--older-than",
        "30d",
        "--progress-older-than",
        "30d",
        "--dry-run",
        "-d",
        url,
    )
    assert code == 0
    # The CLI's now is today, long after every event: rs_done is old too.
    assert "would delete 2 runs and 6 progress rows and 7 old progress rows of kept runs" in out
    for bad in (
        ["prune"],
        ["prune", "--progress-older-than", "soon"],
        ["prune", "--progress-older-than", "-3d"],
    ):
        code, out, err = cli(capsys, *bad, "-d", url)
        assert code == 2, bad
        assert err.startswith("error: ")
        assert err.count("\n") == 1
        assert "Traceback" not in out + err
    code, out, err = cli(capsys, "prune", "-d", url)
    assert "--older-than, --progress-older-than or both" in err
    assert counts(db) == (1, 4, 13)
    archive = tmp_path / "a.jsonl.gz"
    code, out, _ = cli(
        capsys, "prune", "--progress-older-than", "30d", "--archive", str(archive), "-d", url
    )
    assert code == 0
    assert "deleted 0 runs and 0 progress rows and 13 old progress rows of kept runs" in out
    assert "archived 18 rows" in out
    assert counts(db) == (1, 4, 0)
    code, out, _ = cli(capsys, "restore", str(archive), "-d", url)
    assert code == 0
    assert "restored 0 prompts, 0 runs, 13 progress; 0 rows were already present" in out
    assert counts(db) == (1, 4, 13)


def test_retention_racing_a_writer_and_another_prune_keeps_counts_exact(
    db: DatabaseConnection,
) -> None:
    """A writer records events while two event prunes delete them: nothing is counted twice."""
    with db.get_session() as session:
        prompt = make_prompt(id="ps_race")
        session.add_all([prompt, make_run(prompt, id="rs_race", status=RunStatus.RUNNING)])

    def work(index: int) -> int:
        if index == 0:
            for first in range(0, 40, 4):
                record_progress_batch(db, progress_events("rs_race", 0, first, 4))
            return 0
        return sum(
            prune(db, progress_older_than=MONTH, batch_size=3, now=NOW).expired_progress
            for _ in range(8)
        )

    deleted = sum(in_threads(work, 3))
    deleted += prune(db, progress_older_than=MONTH, now=NOW).expired_progress
    assert deleted == 40
    assert stored_seqs(db) == {}
    count, latest_seq, *_ = summaries(db)["rs_race"]
    assert (count, latest_seq) == (0, 40)
    assert latest_progress(db, ["rs_race"])["rs_race"].message == "0:39"


def test_restore_never_makes_the_database_hand_out_an_id_again(
    db: DatabaseConnection, tmp_path: Path
) -> None:
    """An archive restored after newer events were deleted: the next event's id is still above
    every id ever handed out (a sequence set back to MAX(id) would hand out the deleted ones
    again), and restored events keep their ids where the database had issued them."""
    fill(db)
    path = tmp_path / "gone.jsonl.gz"
    prune(db, older_than=MONTH, archive_path=path, now=NOW)  # rs_gone and its events
    record_progress_batch(db, progress_events("rs_active", 0, 0, 3))
    with db.engine.begin() as connection:
        highest = connection.execute(select(func.max(PROGRESS.c.id))).scalar_one()
        connection.execute(PROGRESS.delete().where(PROGRESS.c.id > highest - 3))
    restored = restore(db, path)
    assert (restored.restored["progress"], restored.renumbered) == (2, 0)
    record_progress_batch(db, [{"run_id": "rs_active", "stage": "after", "percentage": 1.0}])
    with db.engine.connect() as connection:
        rows = dict(connection.execute(select(PROGRESS.c.id, PROGRESS.c.stage)).all())
    newest = max(rows)
    assert rows[newest] == "after"
    assert newest > highest
