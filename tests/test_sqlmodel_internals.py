"""What ``models/base.py`` assumes of SQLModel's internals, checked loudly.

``ValidatedTable`` replaces SQLModel's table ``__init__`` and ``__setattr__``; it relies on a few
internals that a new SQLModel may change. If one of these fails after an upgrade, read
``models/base.py`` before raising the upper bound in ``pyproject.toml``.
"""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import event
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm.attributes import instance_state
from sqlmodel import Field, SQLModel

from cosmos_models import Progress, Prompt, Run
from cosmos_models.models.base import ValidatedTable


def test_relationships_are_listed_where_base_py_reads_them() -> None:
    assert Run.__sqlmodel_relationships__.keys() >= {"prompt", "progress"}
    assert Prompt.__sqlmodel_relationships__.keys() >= {"runs"}


def test_sqlmodel_still_skips_validation_for_tables() -> None:
    """The reason ValidatedTable exists: if SQLModel validated tables itself, rows would be
    validated twice (or base.py's shortcut would bypass SQLModel's own)."""

    class Plain(SQLModel, table=True):
        __tablename__ = "plain_internals_probe"
        id: int | None = Field(default=None, primary_key=True)
        name: str

    Plain(name=5)  # type: ignore[arg-type] - accepted: SQLModel does not validate tables


def test_the_validated_base_still_hooks_class_creation() -> None:
    assert hasattr(SQLModel, "__pydantic_init_subclass__")
    assert issubclass(Prompt.__validator__, object)
    assert Prompt.__field_names__ >= {"id", "model_type", "prompt_text", "inputs"}
    assert Prompt.__tracked_fields__ == {"inputs", "parameters"}
    assert issubclass(Prompt, ValidatedTable)


def test_json_columns_keep_change_tracking() -> None:
    prompt = Prompt(model_type="m", prompt_text="p", inputs={"a": 1}, parameters={})
    assert isinstance(prompt.inputs, MutableDict)
    prompt.parameters = {"b": 2}
    assert isinstance(prompt.parameters, MutableDict)


def test_constructor_installs_the_state_and_fires_the_init_events_once() -> None:
    """base.py's __new__ makes SQLAlchemy's state itself and fires ``init`` as SQLAlchemy would;
    SQLAlchemy's generated __init__ must then skip its own (the hasattr check in
    ``ClassManager._new_state_if_none``), so each event fires exactly once."""
    seen: list[tuple[str, dict[str, object]]] = []

    def on_init(_target: object, _args: object, kwargs: dict[str, object]) -> None:
        seen.append(("init", dict(kwargs)))

    def on_failure(_target: object, _args: object, kwargs: dict[str, object]) -> None:
        seen.append(("init_failure", dict(kwargs)))

    event.listen(Progress, "init", on_init)
    event.listen(Progress, "init_failure", on_failure)
    try:
        moment = datetime(2025, 1, 1, tzinfo=UTC)
        good = Progress(run_id="rs_1", stage="s", percentage=1.0, timestamp=moment)
        assert instance_state(good).transient
        assert instance_state(good).obj() is good
        assert [name for name, _ in seen] == ["init"]
        assert seen[0][1]["run_id"] == "rs_1"
        seen.clear()
        with pytest.raises(ValidationError, match="percentage"):
            Progress(run_id="rs_1", stage="s", percentage=101.0)
        assert [name for name, _ in seen] == ["init", "init_failure"]
        seen.clear()
        # No arguments: SQLAlchemy's own path (as when it loads a row) makes the state.
        with pytest.raises(ValidationError, match="run_id"):
            Progress()
        assert [name for name, _ in seen] == ["init", "init_failure"]
    finally:
        event.remove(Progress, "init", on_init)
        event.remove(Progress, "init_failure", on_failure)


def test_new_without_arguments_leaves_the_state_to_sqlalchemy() -> None:
    """SQLAlchemy loads rows with ``cls.__new__(cls)`` and then sets its own state."""
    bare = Progress.__new__(Progress)
    assert "_sa_instance_state" not in bare.__dict__
    assert bare.__pydantic_fields_set__ == set()
    state = Progress._sa_class_manager._new_state_if_none(bare)
    assert state
    assert state.obj() is bare
