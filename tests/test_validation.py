"""Whatever reaches a flush is checked by the column rules: constructed, assigned or changed in place.

Each refused value must raise ``pydantic.ValidationError`` naming the field before any SQL is
sent, and leave the stored row as it was (read back on every backend).
"""

import base64
import enum
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Integer, MetaData, String, text
from sqlalchemy.orm import Mapped, mapped_column, registry
from sqlmodel import Session

from cosmos_models import (
    DatabaseConnection,
    PromptCreate,
    Run,
    create_prompt,
    create_run,
    get_run,
    list_prompts,
    list_runs,
    record_progress,
    transition,
)
from cosmos_models.models.types import MAX_TIMESTAMP, MIN_TIMESTAMP
from cosmos_models.models.values import (
    MAX_JSON_DEPTH,
    MAX_JSON_INT_BITS,
    check_json_value,
    dumps_json,
    plain_json,
)
from cosmos_models.services.queries import MAX_CURSOR_LENGTH, decode_cursor
from tests.factories import add_prompt_with_run, make_progress, make_prompt, make_run, new_prompt


class Float(float):
    """A float subclass whose repr is not a number, as numpy 2's ``float64`` is."""

    def __repr__(self) -> str:
        return f"Float({float(self)})"


class Colour(enum.IntEnum):
    RED = 1


class Shape(enum.StrEnum):
    ROUND = "round"


def nested(depth: int) -> dict[str, Any]:
    """A JSON object whose containers nest ``depth`` deep, itself included."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def fields_of(error: ValidationError) -> set[str]:
    return {str(item["loc"][0]) for item in error.errors()}


# Changes made in place: MutableDict tracks them, __setattr__ never sees them.
IN_PLACE: list[tuple[str, Callable[[Run], None]]] = [
    ("outputs", lambda run: run.outputs.__setitem__(0, "x")),  # type: ignore[index]
    ("outputs", lambda run: run.outputs.__setitem__("deep", nested(40))),
    ("outputs", lambda run: run.outputs.__setitem__("deep", nested(MAX_JSON_DEPTH))),
    ("outputs", lambda run: run.outputs.__setitem__("n", math.nan)),
    ("outputs", lambda run: run.outputs.update({"s": {1, 2}})),
    ("run_metadata", lambda run: run.run_metadata.__setitem__("b", b"bytes")),
    ("run_metadata", lambda run: run.run_metadata.__setitem__("s", "lone \ud800")),
    ("execution_config", lambda run: run.execution_config.__setitem__("k", {1: "int key"})),
    ("execution_config", lambda run: run.execution_config.setdefault("nul", "a\x00b")),
    ("execution_config", lambda run: run.execution_config.__setitem__("big", [10**5000])),
]


@pytest.mark.parametrize("plain_session", [False, True], ids=["get_session", "plain-Session"])
def test_in_place_changes_are_checked_at_flush(db: DatabaseConnection, plain_session: bool) -> None:
    _, run_id = add_prompt_with_run(db)
    stored = get_run(db, run_id)
    for field, change in IN_PLACE:
        if plain_session:  # the spec's testing pattern: a plain sqlmodel.Session on the engine
            with Session(db.engine) as session, pytest.raises(ValidationError) as caught:
                run = session.get(Run, run_id)
                assert run is not None
                change(run)
                session.commit()
        else:
            with pytest.raises(ValidationError) as caught, db.get_session() as session:
                run = session.get(Run, run_id)
                assert run is not None
                change(run)
        assert fields_of(caught.value) == {field}
        assert get_run(db, run_id) == stored  # nothing was written
    assert list_runs(db).items == [stored]  # and every read still works


def test_valid_in_place_changes_are_saved_with_plain_values(db: DatabaseConnection) -> None:
    _, run_id = add_prompt_with_run(db)
    with Session(db.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.outputs["score"] = Float(7.5)
        run.outputs["colour"] = Colour.RED
        run.outputs["list"] = [Shape.ROUND, {"f": Float(0.1)}]
        run.outputs["deep"] = nested(MAX_JSON_DEPTH - 1)  # 30 + the outputs object itself
        run.outputs["big"] = -(2**MAX_JSON_INT_BITS - 1)  # the largest integer accepted
        session.commit()
    outputs = get_run(db, run_id).outputs
    assert outputs == {
        "score": 7.5,
        "colour": 1,
        "list": ["round", {"f": 0.1}],
        "deep": nested(MAX_JSON_DEPTH - 1),
        "big": -(2**MAX_JSON_INT_BITS - 1),
    }
    assert [type(outputs["score"]), type(outputs["colour"]), type(outputs["list"][0])] == [
        float,
        int,
        str,
    ]


def test_subclasses_are_stored_as_their_plain_values(db: DatabaseConnection) -> None:
    values = {"f": Float(7.5), "i": Colour.RED, "s": Shape.ROUND, Shape.ROUND: [Float(1e16)]}
    prompt = make_prompt(parameters=values)
    assert type(prompt.parameters["f"]) is float
    assert [type(key) for key in prompt.parameters] == [str, str, str, str]
    run = make_run(prompt)
    run.outputs = {"nested": {"f": Float(2.5)}}  # assigned, then changed in place below
    run.outputs["g"] = Float(-0.5)
    with db.get_session() as session:
        session.add(prompt)
        session.add(run)
    stored = list_prompts(db).items[0].parameters
    assert stored == {"f": 7.5, "i": 1, "s": "round", "round": [1e16]}
    assert type(stored["round"][0]) is float
    assert get_run(db, run.id).outputs == {"nested": {"f": 2.5}, "g": -0.5}
    progress = record_progress(db, run.id, "inference", Float(42.5))  # type: ignore[arg-type]
    assert type(progress.percentage) is float


def test_numpy_float64_is_stored_as_a_float_when_numpy_is_installed() -> None:
    try:
        import numpy as np  # optional: numpy is not a dependency
    except ImportError:
        values: dict[str, Any] = {"x": Float(7.5)}
    else:  # pragma: no cover - numpy is not installed in the dev environment
        values = {"x": np.float64(7.5)}
    assert type(make_prompt(inputs=values).inputs["x"]) is float
    assert dumps_json(values) == '{"x":7.5}'


def test_plain_json_returns_the_same_object_when_nothing_changes() -> None:
    document = {"a": [1, 2.5, "s", None, True, {"b": []}]}
    assert plain_json(document) is document
    changed = plain_json({"a": [1, Float(2.5)]})
    assert changed == {"a": [1, 2.5]}
    assert type(changed["a"][1]) is float


@pytest.mark.parametrize(
    "value",
    [{0: "int key"}, {"a": {1.5: "float key"}}, {"a": math.nan}, {"a": {1, 2}}, {"a": b"x"}],
)
def test_dumps_json_refuses_what_is_not_json(value: dict[Any, Any]) -> None:
    # The serializer is the last line: it must never write {0:"x"} or a NaN.
    with pytest.raises((TypeError, ValueError)):
        dumps_json(value)


def test_refused_values_are_never_inserted(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    for field, value in [
        ("outputs", {"deep": nested(40)}),
        ("outputs", {"s": "\udfff"}),
        ("run_metadata", {"k": {2: "x"}}),
    ]:
        with pytest.raises(ValidationError) as caught:
            create_run(db, {"prompt_id": prompt_id, field: value})
        assert fields_of(caught.value) == {field}
    assert list_runs(db).items == []


def test_nested_in_place_changes_are_not_saved_and_not_checked(db: DatabaseConnection) -> None:
    # Documented limit (base.py): MutableDict watches the top level only. A nested change marks
    # nothing dirty, so nothing is written, the bad value included: the stored row stays valid.
    _, run_id = add_prompt_with_run(db)
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.outputs["a"] = {"b": 1}
    with db.get_session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.outputs["a"][2] = math.nan
    assert get_run(db, run_id).outputs == {"a": {"b": 1}}


# -- lone surrogates in every text field -----------------------------------------------------


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: make_prompt(model_type="tr\ud800"), "model_type"),
        (lambda: make_prompt(prompt_text="city \udc80 night"), "prompt_text"),
        (lambda: make_prompt(id="ps_\ud800"), "id"),
        (lambda: make_run(make_prompt(), error_message="\ud800"), "error_message"),
        (lambda: make_run(make_prompt(), worker_id="w\udfff"), "worker_id"),
        (lambda: make_progress(make_run(make_prompt()), message="\ud83d"), "message"),
        (lambda: make_progress(make_run(make_prompt()), stage="\ud83d"), "stage"),
        (
            lambda: PromptCreate(model_type="t", prompt_text="\ud800", inputs={}, parameters={}),
            "prompt_text",
        ),
    ],
)
def test_lone_surrogates_are_refused_in_every_text_field(
    build: Callable[[], object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        build()
    assert fields_of(caught.value) == {field}
    # Fields with a max_length are refused by pydantic-core itself, the others by our check.
    assert "unicode" in str(caught.value).lower()


def test_valid_non_ascii_text_is_kept(db: DatabaseConnection) -> None:
    text = "ville la nuit 🌃 — 夜の街"
    created = create_prompt(
        db, {"model_type": "transfer-🌃", "prompt_text": text, "inputs": {}, "parameters": {}}
    )
    assert list_prompts(db).items == [created]
    assert created.prompt_text == text
    with pytest.raises(ValidationError) as caught:
        create_prompt(
            db, {"model_type": "t", "prompt_text": "\ud800", "inputs": {}, "parameters": {}}
        )
    assert fields_of(caught.value) == {"prompt_text"}
    run_id = create_run(db, created.id).id
    with pytest.raises(ValueError, match="error_message"):
        transition(db, run_id, "failed", error_message="lost \udc00")
    with pytest.raises(ValidationError) as caught:
        record_progress(db, run_id, "upload", 1.0, "\ud800")
    assert fields_of(caught.value) == {"message"}
    assert get_run(db, run_id).status == "pending"


# -- timestamps ------------------------------------------------------------------------------

PLUS_14 = timezone(timedelta(hours=14))
MINUS_1 = timezone(timedelta(hours=-1))
REFUSED_TIMES = [
    datetime(1, 1, 1, tzinfo=PLUS_14),  # year 0 in UTC: OverflowError in astimezone
    datetime.max.replace(tzinfo=MINUS_1),  # year 10000 in UTC: OverflowError
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1000, 1, 1, 0, 59, tzinfo=timezone(timedelta(hours=1))),  # 999-12-31 in UTC
    datetime(9999, 12, 31, 23, 0, tzinfo=MINUS_1),  # 10000-01-01 in UTC
    MAX_TIMESTAMP + timedelta(microseconds=1),  # 9999-12-31: read at +09:00 it is year 10000
]
ACCEPTED_TIMES = [
    MIN_TIMESTAMP,
    MAX_TIMESTAMP,
    datetime(1000, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1))),
    MAX_TIMESTAMP.astimezone(PLUS_14),  # 9999-12-31 13:59 local
]


@pytest.mark.parametrize("moment", REFUSED_TIMES, ids=str)
def test_timestamps_outside_the_common_range_are_refused(moment: datetime) -> None:
    with pytest.raises(ValidationError) as caught:
        make_prompt(created_at=moment)
    assert fields_of(caught.value) == {"created_at"}
    run = make_run(make_prompt())
    with pytest.raises(ValidationError) as caught:
        run.heartbeat_at = moment
    assert fields_of(caught.value) == {"heartbeat_at"}
    assert run.heartbeat_at is None


def test_timestamps_in_the_common_range_round_trip_exactly(db: DatabaseConnection) -> None:
    for moment in ACCEPTED_TIMES:
        prompt = create_prompt(
            db, {"model_type": "t", "prompt_text": "x", "inputs": {}, "parameters": {}}, now=moment
        )
        assert prompt.created_at == moment
        run = create_run(db, prompt.id, now=moment)
        stored = get_run(db, run.id)
        assert stored.created_at == moment
        assert stored.created_at.tzinfo is UTC
        assert record_progress(db, run.id, "s", 1.0, timestamp=moment).timestamp == moment
    prompt_id = new_prompt(db)
    run_id = create_run(db, prompt_id).id
    for moment in REFUSED_TIMES:
        with pytest.raises(ValueError, match="now") as refused:
            create_prompt(
                db,
                {"model_type": "t", "prompt_text": "x", "inputs": {}, "parameters": {}},
                now=moment,
            )
        assert not isinstance(refused.value, OverflowError)
        with pytest.raises(ValidationError) as caught:
            record_progress(db, run_id, "s", 1.0, timestamp=moment)
        assert fields_of(caught.value) == {"timestamp"}
        with pytest.raises(ValueError, match="created_after"):
            list_runs(db, created_after=moment)
        with db.get_session() as session, pytest.raises(ValidationError) as caught:
            session.add(make_progress(make_run(make_prompt()), timestamp=moment))
        assert fields_of(caught.value) == {"timestamp"}
    assert len(list_prompts(db, limit=100).items) == len(ACCEPTED_TIMES) + 1


# -- cursors ---------------------------------------------------------------------------------


def _cursor(document: str) -> str:
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("[" * 100_000 + "]" * 100_000)[:MAX_CURSOR_LENGTH],
        _cursor("[" * 380 + "]" * 380),  # nested, but short enough to decode
        _cursor('{"k": "runs", "o": "newest", "t": "0001-01-01T00:00:00+14:00", "i": "x"}'),
        _cursor('{"k": "runs", "o": "newest", "t": 5, "i": "x"}'),
        _cursor("[1]"),
        "x" * (MAX_CURSOR_LENGTH + 1),
        "é",
        "\ud800",
        5,
        None,
        b"abc",
    ],
)
def test_bad_cursors_are_refused_naming_cursor(cursor: Any) -> None:
    with pytest.raises(ValueError, match="cursor") as caught:
        decode_cursor(cursor, "runs", "newest")
    assert not isinstance(caught.value, RecursionError)


def test_deeply_nested_cursor_is_refused_by_list_runs(db: DatabaseConnection) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="cursor"):
        list_runs(db, cursor=_cursor(deep))
    with pytest.raises(ValueError, match="cursor"):
        list_prompts(db, cursor="A" * 10_000_000)


def test_flush_check_leaves_other_tables_and_relationship_changes_alone(
    db: DatabaseConnection,
) -> None:
    # Rows of other mapped classes flush unchecked; a row changed only through a relationship
    # (its progress list) has no field to check; an expired row's changed field is still checked.
    other = registry(metadata=MetaData())

    @other.mapped
    class Note:
        __tablename__ = "notes_for_flush_test"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        text: Mapped[str] = mapped_column(String(10))

    other.metadata.create_all(db.engine)
    try:
        _, run_id = add_prompt_with_run(db)
        with Session(db.engine) as session:
            session.add(Note(text="not ours"))
            run = session.get(Run, run_id)
            assert run is not None
            run.progress.append(make_progress(run, 5.0))
            session.commit()  # expires every attribute of run
            note = session.get(Note, 1)
            assert note is not None
            note.text = "changed"
            run.outputs = {"ok": 1}
            run.outputs[0] = "x"  # type: ignore[index]
            with pytest.raises(ValidationError) as caught:
                session.commit()
            assert fields_of(caught.value) == {"outputs"}
        assert get_run(db, run_id).outputs == {}
    finally:
        other.metadata.drop_all(db.engine)


def test_check_json_value_refuses_like_validation() -> None:
    check_json_value({"a": [1, Float(2.5)]})
    with pytest.raises(ValueError, match=r"value\.a\[0\]"):
        check_json_value({"a": [math.inf]})


def test_the_latest_timestamp_reads_back_in_any_session_time_zone(db: DatabaseConnection) -> None:
    # psycopg converts a timestamptz to the session's zone before our type turns it into UTC.
    _, run_id = add_prompt_with_run(db, created_at=MAX_TIMESTAMP)
    with db.get_session(read_only=True) as session:
        if db.engine.dialect.name == "postgresql":
            session.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))  # +14:00
        run = session.get(Run, run_id)
        assert run is not None
        assert run.created_at == MAX_TIMESTAMP
        assert run.created_at.tzinfo is UTC
