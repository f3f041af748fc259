"""Partitioned progress (PostgreSQL): migration 0006, ``db maintain``, retention by partition drop.

SQLite and MariaDB keep a plain table: 0006 is a no-op there and the schema check stays clean.
"""

import gzip
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    latest_progress,
    progress_since,
    record_progress_batch,
)
from cosmos_models.db.migrate import downgrade, schema_differences, upgrade
from cosmos_models.db.partitions import (
    floor_to,
    is_partitioned,
    list_partitions,
    maintain,
    next_bound,
    quoted,
)
from cosmos_models.db.revisions import alembic_config
from cosmos_models.services import partition_retention
from cosmos_models.services.maintenance import prune
from cosmos_models.services.restore import restore
from tests.backends import server_database
from tests.conftest import require_backend
from tests.factories import add_prompt_with_run
from tests.test_cli import cli
from tests.test_migrations import empty_url  # noqa: F401 - the fixture, on each backend

NOW = datetime.now(UTC)


def months_ago(n: int, day: int = 10) -> datetime:
    """Day ``day`` of the month ``n`` months before this one (UTC)."""
    index = NOW.year * 12 + NOW.month - 1 - n
    return datetime(index // 12, index % 12 + 1, day, 12, tzinfo=UTC)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[DatabaseConnection]:
    """A PostgreSQL database of its own at head (partitioned), for tests that drop partitions."""
    require_backend("postgresql")
    with server_database("postgresql") as made:
        db = DatabaseConnection(made)
        try:
            upgrade(db)
            yield db
        finally:
            db.close()


def _events(run_id: str, stamps: list[datetime]) -> list[dict[str, object]]:
    return [
        {"run_id": run_id, "stage": "inference", "percentage": float(i), "timestamp": stamp}
        for i, stamp in enumerate(stamps)
    ]


def _where(db: DatabaseConnection) -> list[tuple[str, int, int]]:
    with db.connect(read_only=True) as connection:
        rows = connection.execute(
            text("SELECT tableoid::regclass::text, id, seq FROM progress ORDER BY id")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_0006_converts_existing_rows_and_back(empty_url: str) -> None:  # noqa: F811
    upgrade(empty_url, "0005")
    db = DatabaseConnection(empty_url)
    try:
        _, run_id = add_prompt_with_run(db)
        stamps = [datetime(2001, 1, 1, tzinfo=UTC), months_ago(3), months_ago(1), NOW]
        record_progress_batch(db, _events(run_id, stamps))
        upgrade(db)
        assert schema_differences(db) == []
        postgres = db.engine.dialect.name == "postgresql"
        with db.connect(read_only=True) as connection:
            assert is_partitioned(connection) == postgres
            names = [p.name for p in list_partitions(connection)]
        if postgres:
            where = _where(db)
            assert [row[1:] for row in where] == [(1, 1), (2, 2), (3, 3), (4, 4)]
            assert where[0][0] == "progress_history"  # older than 24 months
            assert where[1][0] == f"progress_p{floor_to(months_ago(3), 'month'):%Y%m%d}"
            assert names[0] == "progress_history"
            assert names[-1] == "progress_default"
            assert (
                names[-2]
                == f"progress_p{floor_to(next_bound(NOW, 'month') + timedelta(days=62), 'month'):%Y%m%d}"
            )
        else:
            assert names == []
        # The id sequence carried over: the next event gets the next id, seq the next seq.
        record_progress_batch(db, _events(run_id, [NOW]))
        assert [(e.id, e.seq) for e in progress_since(db, run_id, after=4)] == [(5, 5)]
        downgrade(db, "0005")
        with db.connect(read_only=True) as connection:
            assert not is_partitioned(connection)
        assert [(e.id, e.seq) for e in progress_since(db, run_id)] == [(i, i) for i in range(1, 6)]
        upgrade(db)
        assert schema_differences(db) == []
        record_progress_batch(db, _events(run_id, [NOW]))
        assert latest_progress(db, [run_id])[run_id].id == 6
    finally:
        db.close()


def test_0006_offline_sql_partitions_on_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://u@127.0.0.1:1/offline")
    command.upgrade(config, "0005:0006", sql=True)
    sql = capsys.readouterr().out
    assert 'PARTITION BY RANGE ("timestamp")' in sql
    assert "CREATE TABLE progress_default PARTITION OF progress DEFAULT" in sql
    command.downgrade(config, "0006:0005", sql=True)
    assert "DROP TABLE progress_partitioned" in capsys.readouterr().out


def test_maintain_creates_ahead_idempotently_and_concurrently(pg: DatabaseConnection) -> None:
    first = maintain(pg, ahead=6)
    assert first.partitioned
    assert len(first.created) == 3  # the migration made three months ahead already
    assert maintain(pg, ahead=6).created == []
    # Weekly from where the monthly ones end: no overlap, no gap.
    end = first.covered_until
    assert end is not None
    weekly = maintain(pg, ahead=6, interval="week", now=end)
    assert weekly.created[0] == f"progress_p{end:%Y%m%d}"
    with pg.connect(read_only=True) as connection:
        ranges = [(p.lower, p.upper) for p in list_partitions(connection) if not p.is_default]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    results: list[object] = []

    later = weekly.covered_until
    assert later is not None

    def run() -> None:
        try:
            results.append(maintain(pg, ahead=5, interval="day", now=later))
        except Exception as exc:  # pragma: no cover - reported by the assert below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [name for result in results for name in result.created]  # type: ignore[attr-defined]
    assert len(created) == len(set(created)) > 0
    assert schema_differences(pg) == []


def test_maintain_moves_rows_out_of_the_default_partition(pg: DatabaseConnection) -> None:
    _, run_id = add_prompt_with_run(pg)
    far = NOW + timedelta(days=365 * 2)
    record_progress_batch(pg, _events(run_id, [far, NOW]))
    assert _where(pg)[0][0] == "progress_default"
    result = maintain(pg, ahead=30)
    assert result.moved_rows == 1
    assert _where(pg)[0][0] == f"progress_p{floor_to(far, 'month'):%Y%m%d}"
    assert [e.seq for e in progress_since(pg, run_id)] == [1, 2]
    assert schema_differences(pg) == []


def test_maintain_does_nothing_where_progress_is_plain(db: DatabaseConnection) -> None:
    """SQLite and MariaDB keep a plain table; the fixture's PostgreSQL database is migrated."""
    assert maintain(db).partitioned == (db.engine.dialect.name == "postgresql")


@pytest.mark.parametrize(
    ("ahead", "interval"), [(-1, "month"), (True, "month"), (121, "month"), (3, "year")]
)
def test_maintain_refuses_bad_arguments(ahead: object, interval: str) -> None:
    db = DatabaseConnection("postgresql+psycopg://u@127.0.0.1:1/d")
    with pytest.raises(ValueError, match=r"ahead|interval"):
        maintain(db, ahead=ahead, interval=interval)  # type: ignore[arg-type]
    db.close()


def test_bounds_of_each_interval() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert next_bound(moment, "month") == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_bound(moment, "week") == datetime(2027, 1, 4, tzinfo=UTC)  # a Monday
    assert next_bound(moment, "day") == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="interval 'year'"):
        floor_to(moment, "year")


def _archive_rows(path: Path) -> list[dict[str, object]]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle][1:]


@pytest.fixture
def pg_old() -> Iterator[DatabaseConnection]:
    """Like ``pg``, but converted by 0006 while holding events of the last months (one partition
    per month) of two runs."""
    require_backend("postgresql")
    with server_database("postgresql") as made:
        db = DatabaseConnection(made)
        try:
            upgrade(db, "0005")
            yield db
        finally:
            db.close()


def test_retention_drops_whole_partitions_and_deletes_the_boundary(
    pg_old: DatabaseConnection, tmp_path: Path
) -> None:
    pg = pg_old
    _, run_id = add_prompt_with_run(pg)
    _, other = add_prompt_with_run(pg)
    stamps = [
        months_ago(3),
        months_ago(3, 20),
        months_ago(2),
        months_ago(1, 5),
        months_ago(1, 25),
        NOW,
    ]
    record_progress_batch(pg, _events(run_id, stamps))
    record_progress_batch(pg, _events(other, [months_ago(2), NOW]))
    upgrade(pg)
    before = latest_progress(pg, [run_id, other])
    cutoff = months_ago(1, 15)
    archive = tmp_path / "old.jsonl.gz"
    # Batches of 2: the partitions' rows go to the archive in several members.
    result = prune(
        pg, progress_older_than=NOW - cutoff, archive_path=archive, batch_size=2, now=NOW
    )
    old = {f"progress_p{floor_to(months_ago(n), 'month'):%Y%m%d}" for n in (2, 3)}
    assert old <= set(result.dropped_partitions)
    assert "progress_history" in result.dropped_partitions
    assert result.expired_progress == 5  # 3 + 1 by partition drop, 1 row in the boundary month
    assert [e.seq for e in progress_since(pg, run_id)] == [5, 6]
    assert [e.seq for e in progress_since(pg, other)] == [2]
    assert latest_progress(pg, [run_id, other]) == before
    with pg.connect(read_only=True) as connection:
        counts = dict(connection.execute(text("SELECT id, progress_count FROM runs")).all())
    assert counts == {run_id: 2, other: 1}
    archived = [r for r in _archive_rows(archive) if r.get("table") == "progress"]
    assert sorted((r["row"]["run_id"], r["row"]["seq"]) for r in archived) == sorted(  # type: ignore[index]
        [(run_id, s) for s in (1, 2, 3, 4)] + [(other, 1)]
    )
    assert schema_differences(pg) == []
    # Restored events whose partition is gone land in the default partition.
    assert restore(pg, archive).restored["progress"] == 5
    assert [e.seq for e in progress_since(pg, run_id)] == [1, 2, 3, 4, 5, 6]
    assert {row[0] for row in _where(pg)} >= {"progress_default"}


def test_retention_retries_when_runs_change_under_it(
    pg_old: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = pg_old
    _, run_id = add_prompt_with_run(pg)
    record_progress_batch(pg, _events(run_id, [months_ago(3), months_ago(2), NOW]))
    upgrade(pg)
    real = partition_retention._run_ids
    calls = {"n": 0}

    def flaky(connection: object, name: str) -> list[str]:
        calls["n"] += 1
        ids = real(connection, name)  # type: ignore[arg-type]
        return [*ids, "ghost"] if calls["n"] == 2 else ids

    monkeypatch.setattr(partition_retention, "_run_ids", flaky)
    # Cutoffs at month starts: the month before is dropped whole, nothing is left row by row.
    month_2 = floor_to(months_ago(2), "month")
    result = prune(pg, progress_older_than=timedelta(0), now=month_2)
    assert result.expired_progress == 1
    assert calls["n"] > 2  # changed once, tried again

    def always_new(connection: object, name: str) -> list[str]:
        calls["n"] += 1
        return [f"ghost-{calls['n']}"]

    monkeypatch.setattr(partition_retention, "_run_ids", always_new)
    with pytest.raises(DatabaseError, match="kept changing"):
        prune(pg, progress_older_than=timedelta(0), now=floor_to(months_ago(1), "month"))
    assert [e.seq for e in progress_since(pg, run_id)] == [2, 3]  # nothing lost


def test_cli_maintain(
    pg: DatabaseConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = pg.url.render_as_string(hide_password=False)
    code, out, _ = cli(capsys, "db", "maintain", "--ahead", "5", "-d", address)
    assert code == 0
    assert "partitions created: progress_p" in out
    assert "partitions reach" in out
    assert "none (all present)" in cli(capsys, "db", "maintain", "--ahead", "5", "-d", address)[1]
    # Events beyond every range wait in the default partition until maintain makes theirs.
    _, run_id = add_prompt_with_run(pg)
    record_progress_batch(
        pg, _events(run_id, [datetime(2000, 1, 1, tzinfo=UTC), NOW + timedelta(days=400)])
    )
    code, out, _ = cli(capsys, "db", "maintain", "--ahead", "14", "-d", address)
    assert "1 rows moved from the default partition" in out
    code, out, _ = cli(capsys, "prune", "--progress-older-than", "1s", "-d", address)
    assert code == 0
    assert "old events dropped by partition: progress_history" in out
    downgrade(pg, "0005")
    code, out, _ = cli(capsys, "db", "maintain", "-d", address)
    assert (code, out.strip()) == (0, "progress is not partitioned here: nothing to maintain")
    path = tmp_path / "never.db"
    code, out, _ = cli(capsys, "db", "maintain", "-d", str(path))
    assert (code, out.strip()) == (0, "progress is a plain table on SQLite: nothing to maintain")
    assert not path.exists()
    down = pg.url.set(port=1).render_as_string(hide_password=False)
    for args, expected in (
        (["--interval", "year", "-d", address], 2),
        (["--ahead", "-1", "-d", address], 2),
        (["-d", down], 1),
    ):
        code, _, err = cli(capsys, "db", "maintain", *args)
        assert code == expected
        assert err.startswith("error:")
        assert len(err.strip().splitlines()) == 1


def test_schema_check_sees_a_partitioned_table_without_its_keys_or_default(
    pg: DatabaseConnection,
) -> None:
    with pg.begin() as connection:
        connection.execute(text("ALTER TABLE progress DETACH PARTITION progress_default"))
        connection.execute(
            text("ALTER TABLE progress DROP CONSTRAINT uq_progress_run_id_seq_timestamp")
        )
    differences = [str(item) for item in schema_differences(pg)]
    assert any("lacks uq_progress_run_id_seq_timestamp" in item for item in differences)
    assert any("no progress_default partition" in item for item in differences)
    assert not any(
        item.startswith("partitioned progress lacks pk_progress") for item in differences
    )


def test_retention_drops_a_partition_with_a_hostile_name(pg: DatabaseConnection) -> None:
    """Partitions come from the catalog: one attached by hand under any name is quoted."""
    hostile = 'old "events"; DROP TABLE runs; --'
    with pg.connect(read_only=True) as connection:
        (history,) = [p for p in list_partitions(connection) if p.name == "progress_history"]
    assert history.upper is not None
    with pg.begin() as connection:
        connection.execute(text("ALTER TABLE progress DETACH PARTITION progress_history"))
        connection.execute(text("DROP TABLE progress_history"))
        connection.execute(
            text(
                f"CREATE TABLE {quoted(hostile)} PARTITION OF progress "
                f"FOR VALUES FROM (MINVALUE) TO ('{history.upper.isoformat()}')"
            )
        )
    _, run_id = add_prompt_with_run(pg)
    record_progress_batch(pg, _events(run_id, [datetime(2000, 1, 1, tzinfo=UTC), NOW]))
    result = prune(pg, progress_older_than=timedelta(0), now=history.upper)
    assert result.dropped_partitions == [hostile]
    assert [e.seq for e in progress_since(pg, run_id)] == [2]


def test_retention_gives_up_after_three_failed_tries(
    pg: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run_id = add_prompt_with_run(pg)
    record_progress_batch(pg, _events(run_id, [datetime(2000, 1, 1, tzinfo=UTC)]))
    tries: list[str] = []

    def busy(db: DatabaseConnection, **kwargs: object) -> None:
        tries.append(str(kwargs["name"]))
        raise DatabaseError("lock timeout")

    monkeypatch.setattr(partition_retention, "_drop", busy)
    with pytest.raises(DatabaseError, match="lock timeout"):
        prune(pg, progress_older_than=timedelta(seconds=1))
    assert tries == ["progress_history"] * partition_retention.ATTEMPTS
    monkeypatch.undo()
    # A partition another prune dropped meanwhile is passed over.
    result = prune(pg, progress_older_than=timedelta(seconds=1))
    assert result.dropped_partitions == ["progress_history"]
    partition_retention._drop(
        pg, name="progress_history", archive=None, batch_size=10, result=result
    )
    assert result.dropped_partitions == ["progress_history"]
