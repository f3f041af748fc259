"""Lean reads (rows built into read models without validation) give exactly what validation gives.

Differential: generated runs and events are stored on every backend, then read by the package's
lean paths (get_run, list_runs, progress_since, latest_progress) and, from the same rows read
with Core, by full validation (``model_validate``); the two must be equal, field by field and
type by type (aware UTC timestamps, JSON objects as dicts, statuses as ``RunStatus``).
"""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import bindparam, column, select, table, update
from sqlalchemy import exc as sa_exc

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    ProgressRead,
    Prompt,
    Run,
    RunNotFoundError,
    RunRead,
    RunStatus,
    get_run,
    latest_progress,
    list_prompts,
    list_runs,
    progress_since,
    record_progress_batch,
)
from cosmos_models.db.lean import LeanSelect, typed
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.models.prompt import PromptRead
from cosmos_models.models.readmodels import row_reader
from tests.factories import pending_runs
from tests.test_json_filter_semantics import documents

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=12,
).filter(str.strip)
_zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-3, minutes=-30))]
)
_moments = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 29)),
    _zones,
)
_events = st.lists(
    st.fixed_dictionaries(
        {
            "stage": _text,
            "percentage": st.floats(min_value=0.0, max_value=100.0),
            "message": st.text(
                alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                max_size=30,
            ),
            "timestamp": _moments,
        }
    ),
    max_size=4,
)


def _examples() -> int:
    # A fraction of the profile's count: each example writes and reads on a live backend.
    return max(8, settings().max_examples // 8)


def _validated_run(row: Any) -> RunRead:
    data = dict(row._mapping)
    data["run_metadata"] = data.pop("metadata")
    return RunRead.model_validate(data)


def _same(fast: BaseModel, validated: BaseModel) -> None:
    assert type(fast) is type(validated)
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    for name in type(validated).model_fields:
        mine, theirs = getattr(fast, name), getattr(validated, name)
        assert type(mine) is type(theirs), name
        if isinstance(theirs, datetime):
            assert mine.tzinfo is UTC, name
    assert fast.model_dump(mode="json") == validated.model_dump(mode="json")


@settings(max_examples=_examples(), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    status=st.sampled_from(list(RunStatus)),
    documents=st.tuples(documents, documents, documents),
    moments=st.tuples(_moments, _moments, st.none() | _moments),
    texts=st.tuples(st.none() | _text, st.none() | _text),
    events=_events,
)
def test_lean_reads_equal_validated_reads_on_every_backend(
    db: DatabaseConnection,
    status: RunStatus,
    documents: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
    moments: tuple[datetime, datetime, datetime | None],
    texts: tuple[str | None, str | None],
    events: list[dict[str, Any]],
) -> None:
    with db.get_session() as session:
        prompt = Prompt(model_type="m", prompt_text="p", inputs={}, parameters=documents[0])
        run = Run(
            prompt_id=prompt.id,
            model_type="m",
            execution_config=documents[0],
            outputs=documents[1],
            run_metadata=documents[2],
            created_at=moments[0],
            updated_at=moments[1],
            started_at=moments[2],
            worker_id=texts[0],
            error_message=texts[1],
        )
        session.add_all([prompt, run])
    if events:
        record_progress_batch(db, [{"run_id": run.id, **event} for event in events])
    with db.begin() as connection:  # final statuses take no events: set it afterwards
        connection.execute(
            update(RUNS).where(RUNS.c.id == run.id).values(status=status, updated_at=moments[1])
        )
        run_row = connection.execute(select(RUNS).where(RUNS.c.id == run.id)).one()
        event_rows = connection.execute(
            select(PROGRESS).where(PROGRESS.c.run_id == run.id).order_by(PROGRESS.c.seq)
        ).all()
    expected_run = _validated_run(run_row)
    assert expected_run.status is status
    _same(get_run(db, run.id), expected_run)
    (listed,) = list_runs(db, prompt_id=prompt.id).items
    _same(listed, expected_run)
    (in_status,) = list_runs(db, prompt_id=prompt.id, status=[status], order="oldest").items
    _same(in_status, expected_run)
    expected_events = [ProgressRead.model_validate(dict(row._mapping)) for row in event_rows]
    read_events = progress_since(db, run.id)
    assert len(read_events) == len(expected_events)
    for fast, validated in zip(read_events, expected_events, strict=True):
        _same(fast, validated)
    latest = latest_progress(db, [run.id])
    if expected_events:
        _same(latest[run.id], expected_events[-1])
    else:
        assert latest == {}
    (prompt_read,) = [p for p in list_prompts(db, limit=1000).items if p.id == prompt.id]
    _same(prompt_read, PromptRead.model_validate(prompt, from_attributes=True))


def test_row_reader_names_a_field_the_columns_lack() -> None:
    with pytest.raises(ValueError, match=r"columns: no column for run_metadata"):
        row_reader(RunRead, [c.key for c in RUNS.columns])


def test_typed_leaves_rows_without_processors_as_tuples() -> None:
    assert typed([[1, "a"], (2, "b")], [None, None]) == [(1, "a"), (2, "b")]
    assert typed([[1, "a"]], [None, str.upper]) == [(1, "A")]


def test_lean_reads_translate_driver_errors_and_refuse_a_closed_connection(
    db: DatabaseConnection,
) -> None:
    missing = LeanSelect(select(table("no_such_table", column("id"))))
    with pytest.raises(DatabaseError, match="no_such_table"):
        missing.rows(db, {})
    with pytest.raises(RunNotFoundError):
        get_run(db, "rs_absent")
    with pytest.raises(RunNotFoundError):
        progress_since(db, "rs_absent")
    db.close()
    with pytest.raises(RuntimeError, match="Connection is closed"):
        get_run(db, "rs_x")


def test_rows_on_a_connection_run_in_its_transaction_and_raise_as_core_does(
    db: DatabaseConnection,
) -> None:
    [run_id] = pending_runs(db, 1)
    status_of = LeanSelect(select(RUNS.c.status).where(RUNS.c.id == bindparam("run_id")))
    with db.engine.connect() as connection:
        connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(status="running"))
        # Already in a transaction (Core's execute began it): the read is part of it.
        assert status_of.rows_on(connection, {"run_id": run_id}) == [(RunStatus.RUNNING,)]
        connection.rollback()
        # No transaction yet: rows_on begins one, as Core's execute would.
        assert status_of.rows_on(connection, {"run_id": run_id}) == [(RunStatus.PENDING,)]
        assert connection.in_transaction()
        missing = LeanSelect(select(table("no_such_table", column("id"))))
        with pytest.raises(sa_exc.DBAPIError, match="no_such_table") as caught:
            missing.rows_on(connection, {})
        assert not caught.value.connection_invalidated  # an error, not a dead connection


def test_lean_reads_with_the_server_down_raise_one_database_error() -> None:
    db = DatabaseConnection("postgresql+psycopg://postgres:secret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(DatabaseError) as caught:
            get_run(db, "rs_x")
        assert "secret" not in str(caught.value)
        with pytest.raises(DatabaseError):
            latest_progress(db, ["rs_x"])
    finally:
        db.close()


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2025-01-04 12:00:00.123456", datetime(2025, 1, 4, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2025-01-04 12:00:00", datetime(2025, 1, 4, 12, tzinfo=UTC)),  # older text, no micros
        ("2025-01-04 13:00:00+01:00", datetime(2025, 1, 4, 12, tzinfo=UTC)),
        (datetime(2025, 1, 4, 12), datetime(2025, 1, 4, 12, tzinfo=UTC)),  # MariaDB: naive UTC
    ],
)
def test_stored_timestamps_read_back_as_aware_utc(stored: Any, expected: datetime) -> None:
    from sqlalchemy.dialects import sqlite

    from cosmos_models.models.types import UTCDateTime

    dialect = sqlite.dialect()
    read = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert read is not None
    value = read(stored)
    assert value == expected
    assert value is not None
    assert value.tzinfo is UTC
