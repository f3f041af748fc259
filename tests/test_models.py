"""The tables validate on construction and assignment, and the database enforces what it can."""

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, select, text

from cosmos_models import (
    DatabaseConnection,
    IntegrityViolation,
    Progress,
    ProgressRead,
    Prompt,
    PromptCreate,
    PromptRead,
    Run,
    RunRead,
    RunStatus,
    metadata,
)
from cosmos_models.models.values import MAX_JSON_DEPTH
from tests.factories import add_prompt_with_run, make_progress, make_prompt, make_run


def field_of(error: ValidationError) -> set[str]:
    return {str(item["loc"][0]) for item in error.errors()}


# -- validation on construction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_type", ""),
        ("model_type", "   "),
        ("model_type", None),
        ("model_type", "x" * 101),
        ("prompt_text", ""),
        ("prompt_text", "\t\n"),
        ("prompt_text", "nul\x00byte"),
        ("prompt_text", b"bytes are not text"),
        ("inputs", None),
        ("inputs", []),
        ("inputs", "not an object"),
        ("inputs", {"n": math.nan}),
        ("inputs", {"n": math.inf}),
        ("inputs", {"s": {1, 2}}),
        ("inputs", {"b": b"bytes"}),
        ("inputs", {"d": Decimal("1.5")}),
        ("inputs", {"t": (1, 2)}),
        ("inputs", {"k": {1: "int key"}}),
        ("inputs", {"s": "\ud800"}),
        ("inputs", {"s": "nul\x00"}),
        ("parameters", None),
        ("id", ""),
        ("id", "x" * 256),
        ("created_at", datetime(2025, 1, 4, 12, 0)),  # naive
        ("created_at", "2025-01-04 12:00:00"),  # naive text
        ("created_at", 1736000000),  # Unix seconds are not taken for a time
        ("created_at", 3.5),
    ],
)
def test_prompt_refuses_bad_values_naming_the_field(field: str, value: Any) -> None:
    values: dict[str, Any] = {
        "model_type": "transfer",
        "prompt_text": "text",
        "inputs": {},
        "parameters": {},
        field: value,
    }
    with pytest.raises(ValidationError) as caught:
        Prompt(**values)
    assert field in field_of(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("missing", ["model_type", "prompt_text", "inputs", "parameters"])
def test_prompt_requires_each_required_field(missing: str) -> None:
    values: dict[str, Any] = {
        "model_type": "transfer",
        "prompt_text": "text",
        "inputs": {},
        "parameters": {},
    }
    del values[missing]
    with pytest.raises(ValidationError) as caught:
        Prompt(**values)
    assert field_of(caught.value) == {missing}


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        make_prompt(colour="blue")
    assert "colour" in field_of(caught.value)


def test_prompt_accepts_any_model_type_and_long_text() -> None:
    prompt = make_prompt(model_type="future-world-model-v9", prompt_text="y" * 200_000)
    assert prompt.model_type == "future-world-model-v9"
    assert prompt.id.startswith("ps_")
    assert prompt.created_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "bogus"),
        ("status", None),
        ("execution_config", None),
        ("outputs", [1]),
        ("run_metadata", {"x": math.nan}),
        ("started_at", datetime(2025, 1, 1)),
        ("prompt_id", ""),
    ],
)
def test_run_refuses_bad_values(field: str, value: Any) -> None:
    prompt = make_prompt()
    with pytest.raises(ValidationError) as caught:
        make_run(prompt, **{field: value})
    assert field in field_of(caught.value)


@pytest.mark.parametrize(
    "percentage", [-0.001, 100.0001, math.nan, math.inf, -math.inf, "half", None]
)
def test_progress_refuses_bad_percentages(percentage: Any) -> None:
    run = make_run(make_prompt())
    with pytest.raises(ValidationError) as caught:
        make_progress(run, percentage=percentage)
    assert field_of(caught.value) == {"percentage"}


@pytest.mark.parametrize("percentage", [0, 0.0, 42.5, 100, 100.0])
def test_progress_accepts_the_whole_range(percentage: float) -> None:
    assert make_progress(make_run(make_prompt()), percentage=percentage).percentage == percentage


def test_progress_refuses_empty_stage_and_nul_message() -> None:
    run = make_run(make_prompt())
    with pytest.raises(ValidationError) as caught:
        make_progress(run, stage=" ")
    assert field_of(caught.value) == {"stage"}
    with pytest.raises(ValidationError) as caught:
        make_progress(run, message="a\x00b")
    assert field_of(caught.value) == {"message"}
    assert make_progress(run, message="").message == ""


def test_json_depth_limit_is_enforced_at_the_boundary() -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(depth - 1):
            value = {"k": value}
        return value

    assert make_prompt(inputs=nested(MAX_JSON_DEPTH)).inputs == nested(MAX_JSON_DEPTH)
    with pytest.raises(ValidationError, match="nested deeper"):
        make_prompt(inputs=nested(MAX_JSON_DEPTH + 1))


# -- validation on assignment ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_type", ""),
        ("prompt_text", "  "),
        ("inputs", None),
        ("inputs", {"n": math.nan}),
        ("parameters", "x"),
        ("created_at", datetime(2025, 1, 1)),
    ],
)
def test_assignment_validates_and_keeps_the_old_value(field: str, value: Any) -> None:
    prompt = make_prompt()
    before = getattr(prompt, field)
    with pytest.raises(ValidationError) as caught:
        setattr(prompt, field, value)
    assert field_of(caught.value) == {field}
    assert getattr(prompt, field) == before


def test_assignment_coerces_like_construction() -> None:
    run = make_run(make_prompt())
    run.status = "running"  # type: ignore[assignment]
    assert run.status is RunStatus.RUNNING
    run.started_at = datetime(2025, 1, 4, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert run.started_at == datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
    assert run.started_at.tzinfo is UTC
    with pytest.raises(ValueError, match="no field"):
        run.percentage = 5  # type: ignore[attr-defined]


def test_aware_non_utc_datetime_is_stored_as_utc() -> None:
    moment = datetime(2025, 1, 4, 7, 0, tzinfo=timezone(timedelta(hours=-5)))
    prompt = make_prompt(created_at=moment)
    assert prompt.created_at == datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
    assert prompt.created_at.tzinfo is UTC


# -- API models -----------------------------------------------------------------------------


def test_create_and_read_models_round_trip() -> None:
    create = PromptCreate(model_type="reason", prompt_text="why?", inputs={}, parameters={})
    prompt = Prompt.model_validate(create.model_dump(exclude_none=True))
    read = PromptRead.model_validate(prompt, from_attributes=True)
    dumped = read.model_dump(mode="json")
    assert dumped["id"] == prompt.id
    assert dumped["created_at"].endswith("Z")
    with pytest.raises(ValidationError):
        PromptCreate(model_type="", prompt_text="x", inputs={}, parameters={})


def test_table_model_validate_also_validates() -> None:
    with pytest.raises(ValidationError):
        Prompt.model_validate(
            {"model_type": "t", "prompt_text": "", "inputs": {}, "parameters": {}}
        )


# -- in the database ------------------------------------------------------------------------


def test_rows_round_trip_with_aware_utc_microseconds(db: DatabaseConnection) -> None:
    moment = datetime(2025, 1, 4, 12, 0, 0, 123456, tzinfo=UTC)
    prompt = make_prompt(created_at=moment, inputs={"nested": {"level1": {"x": [1, 2.5, None]}}})
    run = make_run(prompt, created_at=moment, started_at=moment + timedelta(microseconds=1))
    with db.get_session() as session:
        session.add(prompt)
        session.add(run)
        session.add(make_progress(run, 12.5, timestamp=moment + timedelta(microseconds=2)))
    with db.get_session() as session:
        loaded = session.get(Run, run.id)
        assert loaded is not None
        assert loaded.created_at == moment
        assert loaded.created_at.tzinfo is UTC
        assert loaded.started_at == moment + timedelta(microseconds=1)
        assert loaded.status is RunStatus.PENDING
        assert loaded.prompt.inputs == {"nested": {"level1": {"x": [1, 2.5, None]}}}
        event = loaded.progress[0]
        assert event.timestamp == moment + timedelta(microseconds=2)
        assert event.timestamp.tzinfo is UTC
        assert ProgressRead.model_validate(event, from_attributes=True).percentage == 12.5
        assert RunRead.model_validate(loaded, from_attributes=True).run_metadata == {}


def test_in_place_json_changes_are_saved(db: DatabaseConnection) -> None:
    _, run_id = add_prompt_with_run(db)
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.outputs["video"] = "/outputs/x.mp4"
        run.run_metadata.update({"user": "demo"})
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.outputs == {"video": "/outputs/x.mp4"}
        assert run.run_metadata == {"user": "demo"}
        run.outputs = {"a": 1}  # a new dict is tracked too
        run.outputs["b"] = 2
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.outputs == {"a": 1, "b": 2}


def test_updated_at_moves_on_every_update(db: DatabaseConnection) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    _, run_id = add_prompt_with_run(db, created_at=old)
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.updated_at = old
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.updated_at == old
        run.status = RunStatus.UPLOADING
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.updated_at > old


def test_progress_relationship_is_chronological(db: DatabaseConnection) -> None:
    _, run_id = add_prompt_with_run(db)
    base = datetime(2025, 1, 4, tzinfo=UTC)
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        for offset in (3, 1, 2):
            session.add(
                make_progress(run, offset * 10.0, timestamp=base + timedelta(seconds=offset))
            )
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert [p.percentage for p in run.progress] == [10.0, 20.0, 30.0]
        assert run.progress[0].run is run


def test_deleting_a_prompt_cascades_through_the_orm(db: DatabaseConnection) -> None:
    prompt_id, run_id = add_prompt_with_run(db)
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        session.add(make_progress(run))
    with db.get_session() as session:
        prompt = session.get(Prompt, prompt_id)
        session.delete(prompt)
    with db.get_session() as session:
        assert session.scalars(select(Run)).all() == []
        assert session.scalars(select(Progress)).all() == []


def test_plain_sql_delete_cascades_in_the_database(db: DatabaseConnection) -> None:
    prompt_id, run_id = add_prompt_with_run(db)
    with db.get_session() as session:
        session.add(make_progress(make_run(make_prompt(), id=run_id)))
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM prompts WHERE id = :id"), {"id": prompt_id})
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM runs")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM progress")).scalar_one() == 0


def test_foreign_keys_are_enforced(db: DatabaseConnection) -> None:
    with pytest.raises(IntegrityViolation), db.get_session() as session:
        session.add(make_run(make_prompt(), prompt_id="ps_missing"))
    with db.get_session() as session:
        assert session.scalars(select(Run)).all() == []


def test_database_check_constraints_back_up_validation(db: DatabaseConnection) -> None:
    _, run_id = add_prompt_with_run(db)
    violation = "(?i)check|constraint"
    with pytest.raises(sa_exc.DBAPIError, match=violation), db.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'exploded' WHERE id = :id"), {"id": run_id})
    with pytest.raises(sa_exc.DBAPIError, match=violation), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO progress (run_id, seq, timestamp, stage, percentage, message) "
                "VALUES (:r, 1, '2025-01-01 00:00:00', 's', 101, 'm')"
            ),
            {"r": run_id},
        )


def test_schema_has_the_promised_indexes_and_named_constraints(db: DatabaseConnection) -> None:
    inspector = inspect(db.engine)
    indexed = {
        table: {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        for table in ("prompts", "runs", "progress")
    }
    assert ("model_type",) in indexed["prompts"]
    assert ("status",) in indexed["runs"]
    assert ("prompt_id",) in indexed["runs"]
    assert ("status", "created_at", "id") in indexed["runs"]
    assert ("run_id",) in indexed["progress"]
    assert ("timestamp",) in indexed["progress"]
    assert ("run_id", "timestamp", "id") in indexed["progress"]
    unique = {tuple(uq["column_names"]) for uq in inspector.get_unique_constraints("progress")}
    # PostgreSQL partitions progress by timestamp (0006): its unique keys must hold that column.
    partitioned = db.engine.dialect.name == "postgresql"
    assert (("run_id", "seq", "timestamp") if partitioned else ("run_id", "seq")) in unique
    for table in metadata.tables.values():
        for constraint in table.constraints:
            assert constraint.name, f"unnamed constraint on {table.name}"
        for index in table.indexes:
            assert index.name
            assert len(index.name) <= 63


def test_json_and_time_column_types_per_backend(db: DatabaseConnection) -> None:
    dialect = db.engine.dialect.name
    with db.engine.connect() as conn:
        if dialect == "postgresql":
            types = dict(
                conn.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'runs'"
                    )
                ).all()
            )
            assert types["outputs"] == "jsonb"
            assert types["metadata"] == "jsonb"
            assert types["created_at"] == "timestamp with time zone"
        elif dialect == "mysql":
            ddl = conn.execute(text("SHOW CREATE TABLE runs")).all()[0][1]
            assert "json_valid(`outputs`)" in ddl
            assert "`created_at` datetime(6)" in ddl
        else:
            types = {row[1]: row[2] for row in conn.exec_driver_sql("PRAGMA table_info(runs)")}
            assert types["outputs"] == "JSON"
            assert types["created_at"] == "DATETIME"


def test_repr_is_short_and_useful() -> None:
    prompt = make_prompt(id="ps_1")
    run = make_run(prompt, id="rs_1")
    assert repr(prompt) == "Prompt(id='ps_1', model_type='transfer')"
    assert repr(run) == "Run(id='rs_1', prompt_id='ps_1', status='pending')"
    assert repr(make_progress(run, 5)).startswith("Progress(id=None, run_id='rs_1'")


def test_status_is_final_follows_the_lifecycle_table() -> None:
    finals = {status for status in RunStatus if status.is_final}
    assert finals == {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


def test_table_model_validate_reads_attributes_strictly_and_takes_relationships() -> None:
    source = make_prompt()
    attributes = SimpleNamespace(**source.model_dump())  # neither a model nor a mapping
    copy = Prompt.model_validate(attributes, update={"id": "ps_copy"})
    assert (copy.id, copy.inputs, copy.created_at) == ("ps_copy", source.inputs, source.created_at)
    with pytest.raises(ValidationError) as caught:
        Prompt.model_validate(
            {**source.model_dump(), "created_at": "2025-01-04T12:00:00Z"}, strict=True
        )
    assert field_of(caught.value) == {"created_at"}
    run = make_run(source)
    prompt = make_prompt(runs=[run])
    assert prompt.runs == [run]
    assert run.prompt is prompt
