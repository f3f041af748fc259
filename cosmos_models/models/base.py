"""The base class of every table: SQLModel tables that validate like Pydantic models.

SQLModel's ``table=True`` classes skip validation in ``__init__`` and on assignment, and its
``__setattr__`` replaces SQLAlchemy's ``MutableDict`` with the plain ``dict`` it was given, so that
in-place JSON changes are silently lost. ``ValidatedTable`` fixes both:

* every table class gets a plain Pydantic twin with the same fields (``__validator__``, built once
  when the class is created); ``__init__`` validates all fields through it and ``__setattr__``
  validates the one field assigned, so errors are ordinary ``pydantic.ValidationError``s that
  name the field;
* assignments to columns go through SQLAlchemy's instrumentation only, so mutation tracking
  stays in place;
* every flush, on any ``Session`` (this package's or a plain ``sqlmodel.Session``), checks the new
  and changed rows of these tables again before any SQL is sent: in-place JSON changes
  (``run.outputs[0] = "x"``) bypass ``__setattr__``, so the flush is the one place that sees
  every value that is about to be written.

A change nested inside a JSON value (``run.outputs["a"]["b"] = 1``) is not tracked by SQLAlchemy
(``MutableDict`` watches the top level only): it marks nothing dirty and is not saved. Assign the
top-level key again (``run.outputs["a"] = {...}``) to save it.
"""

from collections.abc import Mapping
from typing import Any, ClassVar, Self, get_origin

from pydantic import BaseModel, ConfigDict, create_model
from sqlalchemy import event
from sqlalchemy.orm import Session, registry
from sqlalchemy.orm.attributes import instance_dict, instance_state, manager_of_class, set_attribute
from sqlmodel import SQLModel

from cosmos_models.models.types import metadata
from cosmos_models.models.values import plain_json

_registry = registry(metadata=metadata)


class ValidatedTable(SQLModel, registry=_registry):
    """Base of the package's tables: validation on construction and on assignment."""

    __validator__: ClassVar[type[BaseModel]]
    __field_names__: ClassVar[frozenset[str]] = frozenset()
    __tracked_fields__: ClassVar[frozenset[str]] = frozenset()
    # An instance of __validator__ to copy for validate_assignment: model_construct() would call
    # every default factory (ids, clocks) each time.
    __shadow__: ClassVar[BaseModel]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        fields: dict[str, Any] = {
            name: (info.annotation, info) for name, info in cls.model_fields.items()
        }
        cls.__field_names__ = frozenset(fields)
        # JSON-object fields are stored as MutableDicts (see types.json_column_type).
        cls.__tracked_fields__ = frozenset(
            name for name, info in cls.model_fields.items() if get_origin(info.annotation) is dict
        )
        cls.__validator__ = create_model(
            cls.__name__,
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
            **fields,
        )
        cls.__shadow__ = cls.__validator__.model_construct()

    @classmethod
    def model_validate(  # type: ignore[override]
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        from_attributes: bool | None = None,
        context: dict[str, Any] | None = None,
        update: dict[str, Any] | None = None,
    ) -> Self:
        """Build a row from a dict, an API model or any object with the fields, validated.

        ``update`` adds or overrides values (server-set fields such as ``id``). ``None`` values of
        an API model mean "not given" (so that a create model's ``id=None`` gets a generated id).
        Raises ``pydantic.ValidationError`` naming the fields.
        """
        if isinstance(obj, BaseModel):
            data = obj.model_dump(exclude_none=True)
        elif isinstance(obj, Mapping):
            data = dict(obj)
        else:
            data = {name: getattr(obj, name) for name in cls.model_fields if hasattr(obj, name)}
        data.update(update or {})
        if strict or context:
            cls.__validator__.model_validate(data, strict=strict, context=context)
        return cls(**data)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Make the object and, for a constructor call, its SQLAlchemy state: 40% of ``X(...)``.

        SQLAlchemy's generated ``__init__`` first asks ``hasattr(obj, "_sa_instance_state")``;
        on a pydantic model that miss goes through ``BaseModel.__getattr__`` and raises, which
        cost more than validating the row. Installing the state here (and firing the ``init``
        event as SQLAlchemy would) lets that ``__init__`` go straight to ours. Without
        arguments (SQLAlchemy loading a row, ``copy``) nothing changes: SQLAlchemy sets the
        state itself. tests/test_sqlmodel_internals.py checks what this relies on.
        """
        self = object.__new__(cls)
        # What SQLModel's __new__ does (the instance needs these slots before any attribute).
        object.__setattr__(self, "__pydantic_fields_set__", set())
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)
        if kwargs:
            manager = manager_of_class(cls)
            state = manager._state_constructor(self, manager)
            self.__dict__["_sa_instance_state"] = state
            manager.dispatch.init(state, args, kwargs)
        return self

    def __init__(self, **data: Any) -> None:
        try:
            self._initialize(data)
        except BaseException:
            # With arguments, __new__ made the state and SQLAlchemy's __init__ went straight
            # here: the failure event is ours to fire (without, SQLAlchemy fires it).
            if data:
                state = instance_state(self)
                state.manager.dispatch.init_failure(state, (), data)
            raise

    def _initialize(self, data: dict[str, Any]) -> None:
        """Validate ``data`` and store it as the new row's values (``__init__``'s work)."""
        links = self.__sqlmodel_relationships__
        relationships: dict[str, Any] = {}
        if not links.keys().isdisjoint(data):
            relationships = {key: value for key, value in data.items() if key in links}
            data = {key: value for key, value in data.items() if key not in links}
        checked = self.__validator__.model_validate(data)
        # What SQLModel's own constructor does for a table, minus its second pass over every
        # field: the values are validated already, so they go straight to SQLAlchemy.
        object.__setattr__(self, "__pydantic_fields_set__", set(checked.model_fields_set))
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)
        # A new object has no history to keep: plain values go into the instance dict that
        # SQLAlchemy inserts from; JSON values go through instrumentation so that they become
        # change-tracking MutableDicts.
        state = instance_dict(self)
        tracked = self.__tracked_fields__
        for name, value in checked.__dict__.items():
            if name in tracked:
                set_attribute(self, name, value)
            else:
                state[name] = value
        for name, value in relationships.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__field_names__:
            shadow = self.__shadow__.model_copy()
            self.__validator__.__pydantic_validator__.validate_assignment(shadow, name, value)
            # SQLAlchemy's instrumentation stores the value (coercing dicts to MutableDict and
            # firing events); letting Pydantic store it afterwards would undo the coercion.
            set_attribute(self, name, shadow.__dict__[name])
            self.__pydantic_fields_set__.add(name)
            return
        super().__setattr__(name, value)

    def _check_before_flush(self, names: frozenset[str] | set[str]) -> None:
        """Validate the fields ``names`` as they are now; make JSON values plain in place.

        Raises ``pydantic.ValidationError`` naming the field; nothing is changed then.
        """
        values = instance_dict(self)
        if names is self.__field_names__ and names <= values.keys():
            # A new row: one call checks every field.
            checked = self.__validator__.model_validate({name: values[name] for name in names})
        else:
            checked = self.__shadow__.model_copy()
            validate = self.__validator__.__pydantic_validator__.validate_assignment
            for name in names & values.keys():  # an expired field has no value to check
                validate(checked, name, values[name])
        for name in self.__tracked_fields__.intersection(names):
            # A float subclass put in place (numpy's float64) is stored as its plain value.
            value = values.get(name)
            if value is not None and plain_json(value) is not value:
                set_attribute(self, name, checked.__dict__[name])


@event.listens_for(Session, "before_flush")
def _validate_before_flush(session: Session, *_: Any) -> None:
    """Check every new or changed row of the package's tables before the flush sends any SQL.

    Registered on ``Session`` itself, so it covers every session class and engine. For a changed
    row only the fields changed since it was loaded are checked (the others were checked when
    they were set, or come from the database and may not be loaded).
    """
    for obj in session.new:
        if isinstance(obj, ValidatedTable):
            obj._check_before_flush(obj.__field_names__)
    for obj in session.dirty:
        if isinstance(obj, ValidatedTable):
            changed = instance_state(obj).committed_state.keys() & obj.__field_names__
            if changed:
                obj._check_before_flush(changed)
