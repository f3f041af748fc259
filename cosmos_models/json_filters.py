"""Filters on values inside JSON columns that mean the same on SQLite, PostgreSQL and MariaDB.

``JsonFilter("parameters", ("num_steps",), ">=", 35)`` matches rows whose ``parameters`` hold a
JSON *number* at ``num_steps`` that is at least 35. A filter matches only values of its own JSON
type (a number never equals the string "35", a missing key matches nothing, not even ``!=``),
because each backend converts mismatched types its own way and the answers would differ.

Nothing from a filter is spliced into SQL: the column is looked up among the table's JSON
columns, path keys are validated and sent as a bound JSON path (an array on PostgreSQL), values
are bound parameters.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import ARRAY, ColumnElement, Float, Table, Text, and_, bindparam, case, cast, func
from sqlalchemy.sql.elements import BinaryExpression

from cosmos_models.arguments import MAX_INT, check_int, check_str
from cosmos_models.types import backend_family

Operator = Literal["==", "!=", "<", "<=", ">", ">="]
JsonScalar = str | int | float | bool | None

OPERATORS: Final[frozenset[str]] = frozenset({"==", "!=", "<", "<=", ">", ">="})
MAX_PATH_DEPTH: Final = 16
MAX_KEY_LENGTH: Final = 255
# Quotes and backslashes are escaped differently in SQLite's and MySQL's JSON path syntax, and
# control characters have no business in keys: refusing them keeps one path meaning one thing.
_BAD_KEY = re.compile(r'["\\\x00-\x1f\x7f]')

# The names each backend's JSON type function gives each kind of JSON value.
_TYPE_NAMES: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "sqlite": {
        "number": ("integer", "real"),
        "string": ("text",),
        "true": ("true",),
        "false": ("false",),
        "null": ("null",),
    },
    "mysql": {
        "number": ("INTEGER", "DOUBLE", "UNSIGNED INTEGER", "DECIMAL"),
        "string": ("STRING",),
        "true": ("BOOLEAN",),
        "false": ("BOOLEAN",),
        "null": ("NULL",),
    },
    "postgresql": {
        "number": ("number",),
        "string": ("string",),
        "true": ("boolean",),
        "false": ("boolean",),
        "null": ("null",),
    },
}


@dataclass(frozen=True)
class JsonFilter:
    """One condition on a value inside a JSON column: ``column``, key ``path``, ``op``, ``value``.

    ``path`` holds object keys (``str``) and array indexes (``int`` ≥ 0). ``value`` is a string,
    a finite number (``==``/``!=``/``<``/``<=``/``>``/``>=``), a bool or ``None`` (``==``/``!=``
    only). Raises ``ValueError`` naming ``path``, ``op`` or ``value`` when built wrongly.
    """

    column: str
    path: tuple[str | int, ...]
    op: Operator
    value: JsonScalar

    def __post_init__(self) -> None:
        check_str(self.column, "column")
        object.__setattr__(self, "path", tuple(_checked_path(self.path)))
        if not isinstance(self.op, str) or self.op not in OPERATORS:
            raise ValueError(f"op: must be one of {sorted(OPERATORS)}, got {self.op!r}")
        _check_value(self.value, self.op)


def _checked_path(path: Any) -> list[str | int]:
    if isinstance(path, str | int):
        path = (path,)
    if not isinstance(path, Sequence) or not path or len(path) > MAX_PATH_DEPTH:
        raise ValueError(f"path: must hold 1 to {MAX_PATH_DEPTH} keys, got {path!r}")
    for key in path:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise ValueError(f"path: keys must be strings or array indexes, got {key!r}")
        if isinstance(key, int):
            check_int(key, "path: array indexes", 0)
        elif not key or len(key) > MAX_KEY_LENGTH or _BAD_KEY.search(key):
            raise ValueError(
                f"path: key {key!r} must be 1 to {MAX_KEY_LENGTH} characters without quotes, "
                "backslashes or control characters"
            )
        else:
            check_str(key, "path")
    return list(path)


def _check_value(value: Any, op: str) -> None:
    if value is None or isinstance(value, bool):
        if op not in ("==", "!="):
            raise ValueError(f"op: {value!r} can only be compared with == or !=, not {op!r}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"value: must be a finite number, got {value!r}")
    if isinstance(value, str):
        check_str(value, "value")
    elif isinstance(value, int):
        # Bound as a SQL integer: SQLite (and BIGINT) stop at 64 bits.
        check_int(value, "value", -MAX_INT - 1)
    elif not isinstance(value, float):
        raise ValueError(f"value: must be a string, number, bool or None, got {value!r}")


def _kind(value: JsonScalar) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "string" if isinstance(value, str) else "number"


def _json_path(path: Sequence[str | int]) -> str:
    # SQLite and MySQL: $."key"[0]; keys are quoted so that dots or spaces in them stay literal.
    return "$" + "".join(f"[{key}]" if isinstance(key, int) else f'."{key}"' for key in path)


def _compare(left: ColumnElement[Any], op: str, right: Any) -> ColumnElement[bool]:
    comparisons: dict[str, Any] = {
        "==": left.__eq__,
        "!=": left.__ne__,
        "<": left.__lt__,
        "<=": left.__le__,
        ">": left.__gt__,
        ">=": left.__ge__,
    }
    result: BinaryExpression[bool] = comparisons[op](right)
    return result


def json_condition(
    table: Table, columns: dict[str, str], condition: JsonFilter, dialect: str
) -> ColumnElement[bool]:
    """The SQL condition for ``condition`` on ``table`` for the named dialect.

    ``columns`` maps the attribute names callers use to the table's JSON column names. Raises
    ``ValueError`` naming ``column`` for a column that is not one of them.
    """
    if condition.column not in columns:
        raise ValueError(
            f"column: {condition.column!r} is not a JSON column of {table.name}; "
            f"use one of {sorted(columns)}"
        )
    column = table.c[columns[condition.column]]
    family = backend_family(dialect)
    if family == "postgresql":
        keys = bindparam(None, [str(key) for key in condition.path], type_=ARRAY(Text))
        json_type = func.jsonb_typeof(column.op("#>")(keys))
        as_number: ColumnElement[Any] = cast(column.op("#>>", return_type=Text)(keys), Float)
        # "C": byte order, as on SQLite and MariaDB, whatever the database's locale.
        as_text: ColumnElement[Any] = column.op("#>>", return_type=Text)(keys).collate("C")
    elif family == "mysql":
        path = bindparam(None, _json_path(condition.path), type_=Text)
        extracted = func.json_extract(column, path)
        json_type = func.json_type(extracted)
        # JSON_UNQUOTE returns the string's text; _bin so that comparisons are exact whatever
        # the database's default collation (which is often case-insensitive).
        as_text = func.json_unquote(extracted).collate("utf8mb4_bin")
        as_number = cast(func.json_unquote(extracted), Float)
    else:
        path = bindparam(None, _json_path(condition.path), type_=Text)
        json_type = func.json_type(column, path)
        as_text = as_number = func.json_extract(column, path)
    kind = _kind(condition.value)
    if kind == "null":
        is_null = json_type.in_(_TYPE_NAMES[family]["null"])
        # "!= None": the key is present with any value but null.
        return is_null if condition.op == "==" else and_(json_type.is_not(None), ~is_null)
    if kind in ("true", "false"):
        # "!= True" is "== False": a filter only ever matches values of its own JSON type.
        wanted = "true" if (kind == "true") == (condition.op == "==") else "false"
        of_bool = json_type.in_(_TYPE_NAMES[family][wanted])
        # SQLite's type names say true or false; elsewhere one name covers both, so read the text.
        return of_bool if family == "sqlite" else and_(of_bool, as_text == wanted)
    operand = as_text if kind == "string" else as_number
    # CASE, not AND: SQL does not promise to test the type before casting, and PostgreSQL's cast
    # of a non-numeric string fails the whole query.
    guarded = case((json_type.in_(_TYPE_NAMES[family][kind]), operand), else_=None)
    return _compare(guarded, condition.op, condition.value)
