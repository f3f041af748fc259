"""What ``models/base.py`` assumes of SQLModel's internals, checked loudly.

``ValidatedTable`` replaces SQLModel's table ``__init__`` and ``__setattr__``; it relies on a few
internals that a new SQLModel may change. If one of these fails after an upgrade, read
``models/base.py`` before raising the upper bound in ``pyproject.toml``.
"""

from sqlalchemy.ext.mutable import MutableDict
from sqlmodel import Field, SQLModel

from cosmos_models import Prompt, Run
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
