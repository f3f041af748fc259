"""Recording progress (one event or a batch, all or none) and reading it back, on every backend."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    Progress,
    ProgressCreate,
    RunFinishedError,
    RunNotFoundError,
    create_prompt,
    create_run,
    get_run,
    latest_progress,
    progress_since,
    record_progress,
    record_progress_batch,
    transition,
)
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.errors import ValueTooLargeError
from cosmos_models.services.progress_queries import latest_progress_query
from tests.factories import at


def runs(db: DatabaseConnection, count: int) -> list[str]:
    prompt = create_prompt(
        db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
    )
    return [create_run(db, prompt.id, now=at(i)).id for i in range(count)]


def progress_count(db: DatabaseConnection) -> int:
    with db.get_session(read_only=True) as session:
        return int(session.execute(select(func.count()).select_from(PROGRESS)).scalar_one())


# -- one event ---------------------------------------------------------------------------------


def test_record_progress_returns_the_stored_event(db: DatabaseConnection) -> None:
    (run_id,) = runs(db, 1)
    event = record_progress(db, run_id, "uploading", 12.5, "sending city.mp4", timestamp=at(3))
    assert (event.run_id, event.stage, event.percentage, event.message) == (
        run_id,
        "uploading",
        12.5,
        "sending city.mp4",
    )
    assert event.timestamp == at(3)
    assert event.id > 0
    later = record_progress(db, run_id, "inference", 50)
    assert later.id > event.id
    assert later.message == ""
    assert later.timestamp.tzinfo is UTC


# Over MariaDB's default max_allowed_packet (16 MB) as sent, nothing to SQLite or PostgreSQL:
# 17 MB of UTF-8, and 9 MB of backslashes, which the driver sends escaped (doubled).
_LARGE = ("é" * (17 << 19), "\\" * (9 << 20))


@pytest.mark.parametrize("large", _LARGE, ids=["17 MB of UTF-8", "9 MB escaped to 18"])
def test_a_message_larger_than_the_server_takes_is_refused_whole_or_stored_whole(
    db: DatabaseConnection, backend: str, large: str
) -> None:
    # MariaDB dropped the connection mid-packet: "server has gone away" (a 503 "try again
    # later") on the sync side, a raw OperationalError at COMMIT on the async side.
    (run_id,) = runs(db, 1)
    calls = [
        lambda: record_progress(db, run_id, "s", 1.0, large),
        lambda: record_progress_batch(
            db, [{"run_id": run_id, "stage": "s", "percentage": 2.0, "message": large}]
        ),
    ]
    for call in calls:
        if backend == "mariadb":
            with pytest.raises(ValueTooLargeError, match="max_allowed_packet: 16,777,216 bytes"):
                call()
        else:
            call()
    expected = 0 if backend == "mariadb" else 2
    assert progress_count(db) == expected
    assert get_run(db, run_id).progress_count == expected
    if backend != "mariadb":
        assert latest_progress(db, [run_id])[run_id].message == large
    assert record_progress(db, run_id, "after", 3.0).seq == expected + 1  # still usable


def test_a_closed_database_refuses_even_a_call_with_nothing_to_do(db: DatabaseConnection) -> None:
    # An empty batch returned 0 on the sync side (and on MariaDB's async side) but raised on
    # the others: now every side and backend says the connection is closed.
    db.close()
    for call in (lambda: record_progress_batch(db, []), lambda: latest_progress(db, [])):
        with pytest.raises(RuntimeError, match="Connection is closed"):
            call()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"percentage": 100.5}, "percentage"),
        ({"percentage": -0.1}, "percentage"),
        ({"percentage": float("nan")}, "percentage"),
        ({"stage": "  "}, "stage"),
        ({"stage": "x" * 101}, "stage"),
        ({"message": "nul\x00"}, "message"),
        ({"timestamp": datetime(2025, 1, 4, 12)}, "timestamp"),  # naive
        ({"run_id": ""}, "run_id"),
    ],
)
def test_record_progress_refuses_bad_values_naming_the_field(
    db: DatabaseConnection, kwargs: dict[str, Any], field: str
) -> None:
    (run_id,) = runs(db, 1)
    arguments: dict[str, Any] = {
        "run_id": run_id,
        "stage": "inference",
        "percentage": 10.0,
        "message": "ok",
        **kwargs,
    }
    with pytest.raises(ValidationError) as caught:
        record_progress(db, **arguments)
    assert field in {str(error["loc"][0]) for error in caught.value.errors()}
    assert progress_count(db) == 0


def test_record_progress_refuses_unknown_and_final_runs(db: DatabaseConnection) -> None:
    with pytest.raises(RunNotFoundError, match="rs_missing"):
        record_progress(db, "rs_missing", "inference", 1.0)
    done, failed = runs(db, 2)
    transition(db, done, "running")
    transition(db, done, "completed")
    transition(db, failed, "failed", error_message="boom")
    for run_id, status in ((done, "completed"), (failed, "failed")):
        with pytest.raises(RunFinishedError, match=status) as caught:
            record_progress(db, run_id, "inference", 1.0)
        assert caught.value.run_id == run_id
    assert progress_count(db) == 0


# -- batches -----------------------------------------------------------------------------------


def test_batch_writes_events_of_several_runs(db: DatabaseConnection) -> None:
    run_a, run_b = runs(db, 2)
    events: list[ProgressCreate | dict[str, Any]] = [
        {"run_id": run_a, "stage": "uploading", "percentage": 0, "timestamp": at(1)},
        ProgressCreate(run_id=run_b, stage="uploading", percentage=5.5, message="m"),
        {"run_id": run_a, "stage": "inference", "percentage": 40.0, "message": "frame 48/120"},
    ]
    assert record_progress_batch(db, events) == 3
    assert record_progress_batch(db, iter([ProgressCreate(run_id=run_a, stage="s", percentage=1)]))
    assert [e.stage for e in progress_since(db, run_a)] == ["uploading", "inference", "s"]
    assert progress_since(db, run_b)[0].message == "m"
    assert record_progress_batch(db, []) == 0


def test_batch_is_all_or_none(db: DatabaseConnection) -> None:
    run_a, finished = runs(db, 2)
    transition(db, finished, "cancelled")
    good = {"run_id": run_a, "stage": "inference", "percentage": 10.0}
    with pytest.raises(ValidationError) as caught:
        record_progress_batch(db, [good, good, {**good, "percentage": 101}])
    assert caught.value.errors()[0]["loc"][:2] == (2, "percentage")
    with pytest.raises(RunNotFoundError) as missing:
        record_progress_batch(db, [good, {**good, "run_id": "rs_x"}, {**good, "run_id": "rs_y"}])
    assert missing.value.run_ids == ["rs_x", "rs_y"]
    with pytest.raises(RunFinishedError, match="cancelled"):
        record_progress_batch(db, [good, {**good, "run_id": finished}])
    assert progress_count(db) == 0


# -- reading -----------------------------------------------------------------------------------


def test_latest_progress_is_the_last_committed_event(db: DatabaseConnection) -> None:
    run_a, run_b, silent = runs(db, 3)
    record_progress_batch(
        db,
        [
            {"run_id": run_a, "stage": "late", "percentage": 90, "timestamp": at(30)},
            {"run_id": run_b, "stage": "first", "percentage": 10, "timestamp": at(20)},
            {"run_id": run_b, "stage": "same-time-later", "percentage": 20, "timestamp": at(20)},
        ],
    )
    # Written last, with an older timestamp: latest is commit order (seq), not the clock.
    written = record_progress(db, run_a, "early", 10, "sent late", timestamp=at(10))
    latest = latest_progress(db, [run_a, run_b, silent, "rs_unknown", run_a])
    assert set(latest) == {run_a, run_b}
    assert latest[run_a] == written
    assert (latest[run_a].seq, latest[run_a].timestamp, latest[run_a].message) == (
        2,
        at(10),
        "sent late",
    )
    assert (latest[run_b].stage, latest[run_b].seq) == ("same-time-later", 2)
    assert latest[run_b].id == progress_since(db, run_b)[1].id
    assert latest_progress(db, []) == {}


def test_events_are_numbered_per_run_and_summarised_on_the_run(db: DatabaseConnection) -> None:
    run_a, run_b = runs(db, 2)
    before = get_run(db, run_a)
    assert (before.progress_count, before.latest_seq) == (0, 0)
    assert record_progress(db, run_a, "uploading", 0).seq == 1
    record_progress_batch(
        db,
        [
            {"run_id": run_b, "stage": "b", "percentage": 1},
            {"run_id": run_a, "stage": "a", "percentage": 2},
            {"run_id": run_a, "stage": "a", "percentage": 3, "message": "last of a"},
        ],
    )
    assert [(e.seq, e.percentage) for e in progress_since(db, run_a)] == [(1, 0), (2, 2), (3, 3)]
    assert [e.seq for e in progress_since(db, run_b)] == [1]
    after = get_run(db, run_a)
    assert (after.progress_count, after.latest_seq) == (3, 3)
    assert after.updated_at == before.updated_at  # progress is not a change of the run's record
    # A refused batch numbers nothing: the next event continues without a gap.
    transition(db, run_b, "cancelled")
    with pytest.raises(RunFinishedError):
        record_progress_batch(
            db,
            [
                {"run_id": run_a, "stage": "a", "percentage": 4},
                {"run_id": run_b, "stage": "b", "percentage": 4},
            ],
        )
    assert record_progress(db, run_a, "a", 5).seq == 4
    assert get_run(db, run_b).progress_count == 1
    with db.get_session(read_only=True) as session:
        summary = session.execute(
            select(RUNS.c.latest_stage, RUNS.c.latest_percentage, RUNS.c.latest_message).where(
                RUNS.c.id == run_a
            )
        ).one()
    assert tuple(summary) == ("a", 5.0, "")


def test_orm_inserts_are_numbered_too(db: DatabaseConnection) -> None:
    (run_id,) = runs(db, 1)
    record_progress(db, run_id, "s", 1)
    with db.get_session() as session:
        session.add_all([Progress(run_id=run_id, stage="orm", percentage=float(i)) for i in (2, 3)])
    stored = progress_since(db, run_id)
    assert [e.seq for e in stored] == [1, 2, 3]
    assert latest_progress(db, [run_id])[run_id] == stored[-1]
    with pytest.raises(RunNotFoundError), db.get_session() as session:
        session.add(Progress(run_id="rs_missing", stage="orm", percentage=1.0))


def test_progress_since_pages_through_a_run_for_polling(db: DatabaseConnection) -> None:
    run_a, run_b = runs(db, 2)
    record_progress_batch(
        db,
        [
            {"run_id": run_id, "stage": "s", "percentage": i}
            for i in range(5)
            for run_id in (run_a, run_b)
        ],
    )
    first = progress_since(db, run_a, limit=2)
    assert [e.percentage for e in first] == [0, 1]
    rest = progress_since(db, run_a, after=first[-1].seq, limit=10)
    assert [e.percentage for e in rest] == [2, 3, 4]
    assert [e.seq for e in first + rest] == [1, 2, 3, 4, 5]
    assert {e.run_id for e in first + rest} == {run_a}
    assert progress_since(db, run_a, after=rest[-1].seq) == []
    assert progress_since(db, run_a, after=99) == []
    with pytest.raises(RunNotFoundError):
        progress_since(db, "rs_missing")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"after": -1}, "after"),
        ({"after": True}, "after"),
        ({"after": "3"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": 2.5}, "limit"),
    ],
)
def test_progress_since_refuses_bad_arguments(
    db: DatabaseConnection, kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        progress_since(db, "rs_any", **kwargs)


def _plan(db: DatabaseConnection, run_ids: list[str]) -> str:
    dialect = db.engine.dialect.name
    query = latest_progress_query(run_ids, dialect)
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    with db.engine.connect() as connection:
        # Fresh statistics, as a database with millions of rows would have.
        if dialect == "postgresql":
            connection.execute(text("ANALYZE progress"))
            connection.execute(text("ANALYZE runs"))
        elif dialect == "mysql":
            connection.execute(text("ANALYZE TABLE progress, runs"))
        rows = connection.exec_driver_sql(prefix + sql).all()
    return "\n".join(" ".join(str(value) for value in row) for row in rows)


def test_latest_progress_reads_runs_by_key_and_no_event_row(db: DatabaseConnection) -> None:
    run_ids = runs(db, 20)
    record_progress_batch(
        db,
        (
            {"run_id": run_id, "stage": "s", "percentage": i % 100, "timestamp": at(i)}
            for run_id in run_ids
            for i in range(250)
        ),
    )
    plan = _plan(db, run_ids[:3])
    # The summary holds the latest event: progress is not read at all, runs by primary key.
    assert "progress" not in plan, plan
    if db.engine.dialect.name == "sqlite":
        assert "SEARCH runs USING INDEX sqlite_autoindex_runs_1 (id=?)" in plan, plan


# Ids that mean something in PostgreSQL's array syntax (latest_progress sends the ids as one
# array literal there): each must stay one whole id, never split, unquoted or read as NULL.
ARRAY_SYNTAX_IDS = ("a,b", 'q"d', "b\\s", "{x}", " sp ", "NULL", 'é\\"', "x\\")


def test_latest_progress_with_ids_that_look_like_array_syntax(db: DatabaseConnection) -> None:
    prompt = create_prompt(
        db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
    )
    stored = [*ARRAY_SYNTAX_IDS, "a", "b", "x", "sp"]
    for index, run_id in enumerate(stored):
        create_run(db, {"id": run_id, "prompt_id": prompt.id})
        record_progress(db, run_id, "s", float(index), timestamp=at(index))
    # Unknown ids a misread of the others would produce, and ones that need escaping.
    unknown = ["", "q", "d", "NUL", '"', "\\", ",", "{}", "x}", "b\\\\s"]
    found = latest_progress(db, [*ARRAY_SYNTAX_IDS, *unknown])
    assert set(found) == set(ARRAY_SYNTAX_IDS)
    for index, run_id in enumerate(stored[: len(ARRAY_SYNTAX_IDS)]):
        (event,) = progress_since(db, run_id)
        assert found[run_id] == event
        assert (found[run_id].percentage, found[run_id].timestamp) == (float(index), at(index))
        assert found[run_id].timestamp.tzinfo is UTC
    assert latest_progress(db, unknown) == {}


def test_batch_checks_event_objects_again(db: DatabaseConnection) -> None:
    (run_id,) = runs(db, 1)
    event = ProgressCreate(run_id=run_id, stage="inference", percentage=50)
    event.percentage = 500  # models without validate_assignment accept this silently
    with pytest.raises(ValidationError, match="percentage"):
        record_progress_batch(db, [event])
    assert progress_count(db) == 0


def test_latest_progress_errors_are_translated(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver-level read goes through the same error translation as the rest."""
    import cosmos_models.services.progress_queries as tracking

    (run_id,) = runs(db, 1)
    record_progress(db, run_id, "s", 1.0)
    real = tracking._latest_progress_sql

    def broken(run_ids: list[str], dialect: str) -> tuple[str, Any]:
        sql, parameters = real(run_ids, dialect)
        return sql.replace("FROM runs", "FROM no_such_table"), parameters

    monkeypatch.setattr(tracking, "_latest_progress_sql", broken)
    with pytest.raises(DatabaseError, match="no_such_table"):
        latest_progress(db, [run_id])


def test_postgresql_timestamps_in_another_zone_are_read_as_utc() -> None:
    """latest_progress reads timestamps through the column type's own result processor."""
    from sqlalchemy.dialects.postgresql import psycopg

    from cosmos_models.models.types import UTCDateTime

    dialect = psycopg.dialect()  # type: ignore[no-untyped-call]
    process = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None
    paris = datetime(2025, 1, 4, 13, tzinfo=timezone(timedelta(hours=1)))
    assert process(paris) == datetime(2025, 1, 4, 12, tzinfo=UTC)
    assert process(paris).tzinfo is UTC
    assert process(None) is None


def test_an_orm_event_with_its_seq_given_keeps_it(db: DatabaseConnection) -> None:
    """A restore puts archived events back with their seq: it is not renumbered."""
    (run_id,) = runs(db, 1)
    with db.get_session() as session:
        session.add(Progress(run_id=run_id, stage="restored", percentage=5.0, seq=7))
    assert [e.seq for e in progress_since(db, run_id)] == [7]
