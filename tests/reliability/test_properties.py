"""Property-based reliability: JSON round trips, invalid input, hostile strings, on every backend."""

import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import func, select

from cosmos_models import DatabaseConnection, Progress, Prompt, Run
from tests.factories import make_progress, make_prompt, make_run

# Thousands of examples against a server take minutes: more than the default per-test timeout.
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1800)]

# Text every backend stores: no NUL (PostgreSQL), no lone surrogates (not UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON, max_size=6)
PER_BACKEND = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON type all the way down (1.0 is not 1, True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def test_same_is_strict() -> None:
    assert same({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]})
    assert not same({"a": 1}, {"a": 1.0})
    assert not same([True], [1])
    assert not same({"a": 1}, {"b": 1})
    assert not same([1], [1, 2])


@PER_BACKEND
@given(inputs=JSON_OBJECTS, parameters=JSON_OBJECTS)
def test_any_json_object_round_trips_exactly(
    db: DatabaseConnection, inputs: dict[str, Any], parameters: dict[str, Any]
) -> None:
    prompt = make_prompt(inputs=inputs, parameters=parameters)
    with db.get_session() as session:
        session.add(prompt)
    with db.get_session(read_only=True) as session:
        loaded = session.get(Prompt, prompt.id)
        assert loaded is not None
        assert same(loaded.inputs, inputs)
        assert same(loaded.parameters, parameters)
    with db.get_session() as session:
        session.delete(session.get(Prompt, prompt.id))


INVALID: dict[str, list[Any]] = {
    "model_type": [None, "", " \t", "m" * 101, "a\x00b", 5],
    "prompt_text": [None, "", "   ", "x\x00", b"bytes"],
    "inputs": [None, [], "text", {"n": math.nan}, {"s": {1}}, {1: "int key"}, {"b": b"x"}],
    "parameters": [None, {"x": math.inf}, {"x": "\ud800"}],
    "created_at": [datetime(2025, 1, 1), "yesterday", 3.5],
}
RUN_INVALID: dict[str, list[Any]] = {
    "status": ["bogus", None, 3],
    "execution_config": [None, [1]],
    "started_at": [datetime(2025, 1, 1)],
    "id": ["", "r" * 256],
}
PROGRESS_INVALID: dict[str, list[Any]] = {
    "percentage": [-1, 100.5, math.nan, math.inf, "x", None],
    "stage": ["", " ", "s" * 101, None],
    "message": ["a\x00", None],
    "timestamp": [datetime(2025, 1, 1)],
}


def _rows(db: DatabaseConnection) -> tuple[int, int, int]:
    with db.get_session(read_only=True) as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Prompt, Run, Progress)
        )


@PER_BACKEND
@given(data=st.data())
def test_invalid_input_names_the_field_and_writes_nothing(
    db: DatabaseConnection, data: st.DataObject
) -> None:
    before = _rows(db)
    kind = data.draw(st.sampled_from(["prompt", "run", "progress"]))
    table = {"prompt": INVALID, "run": RUN_INVALID, "progress": PROGRESS_INVALID}[kind]
    field = data.draw(st.sampled_from(sorted(table)))
    value = data.draw(st.sampled_from(table[field]))
    assign = data.draw(st.booleans())
    with pytest.raises(ValidationError) as caught, db.get_session() as session:
        prompt = make_prompt()
        session.add(prompt)
        target: Any
        if kind == "prompt":
            target = prompt if assign else make_prompt(**{field: value})
        elif kind == "run":
            run = make_run(prompt)
            session.add(run)
            target = run if assign else make_run(prompt, **{field: value})
        else:
            run = make_run(prompt)
            session.add(run)
            target = make_progress(run) if assign else make_progress(run, **{field: value})
        if assign:
            setattr(target, field, value)
        session.flush()
    assert field in {str(error["loc"][0]) for error in caught.value.errors()}
    assert _rows(db) == before


HOSTILE = [
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "%_%",
    "\\'\\\"",
    "Robert'); DELETE FROM prompts;--",
    "$.a[0]",
    "{}[]",
    "日本語 ✓ 🚀",
    "line\nbreak\ttab",
    "a" * 255,
]


@PER_BACKEND
@given(hostile=st.sampled_from(HOSTILE) | TEXT.filter(lambda s: s.strip() != ""))
def test_hostile_strings_are_stored_never_executed(db: DatabaseConnection, hostile: str) -> None:
    prompt_id = hostile[:255]
    with db.get_session() as session:
        prompt = make_prompt(id=prompt_id, model_type=hostile[:100], inputs={hostile: hostile})
        run = make_run(prompt, id=prompt_id)
        session.add_all([prompt, run])
        session.flush()
        session.add(make_progress(run, 1.0, stage=hostile[:100], message=hostile))
    with db.get_session() as session:
        run = session.get(Run, prompt_id)
        assert run is not None
        assert run.prompt.inputs == {hostile: hostile}
        assert run.progress[0].stage == hostile[:100]
        assert run.progress[0].message == hostile
        session.delete(run.prompt)
    assert _rows(db) == (0, 0, 0)
