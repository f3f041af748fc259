"""Filters on values inside JSON columns that mean the same on SQLite, PostgreSQL and MariaDB.

``JsonFilter("parameters", ("num_steps",), ">=", 35)`` matches rows whose ``parameters`` hold a
JSON *number* at ``num_steps`` that is at least 35. A filter matches only values of its own JSON
type (a number never equals the string "35", a missing key matches nothing, not even ``!=``),
because each backend converts mismatched types its own way and the answers would differ.

Nothing from a filter is spliced into SQL: the column is looked up among the table's JSON
columns, path keys are validated and sent as a bound JSON path (a strict jsonpath on
PostgreSQL), values are bound parameters.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Double,
    Numeric,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    or_,
    true,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import BinaryExpression
from sqlalchemy.sql.functions import FunctionElement

from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.checks import check_int, check_str
from cosmos_models.models.types import backend_family

Operator = Literal["==", "!=", "<", "<=", ">", ">="]
JsonScalar = str | int | float | bool | None

OPERATORS: Final[frozenset[str]] = frozenset({"==", "!=", "<", "<=", ">", ">="})
MAX_PATH_DEPTH: Final = 16
MAX_KEY_LENGTH: Final = 255
# Quotes and backslashes are escaped differently in SQLite's and MySQL's JSON path syntax, and
# control characters have no business in keys: refusing them keeps one path meaning one thing.
_BAD_KEY = re.compile(r'["\\\x00-\x1f\x7f]')

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True)
class JsonFilter:
    """One condition on a value inside a JSON column: ``column``, key ``path``, ``op``, ``value``.

    ``path`` holds object keys (``str``, entering objects only) and array indexes (``int`` ≥ 0,
    entering arrays only). ``value`` is a string (compared exactly, in code point order), a
    finite number (compared exactly with the stored integer or double), a bool or ``None``
    (``==``/``!=`` only). The README's "JSON filter semantics" gives the rules. Raises
    ``ValueError`` naming ``path``, ``op`` or ``value`` when built wrongly, and for keys no
    backend could look up identically (quotes, backslashes, control characters, a leading ``-``).
    """

    column: str
    path: tuple[str | int, ...]
    op: Operator
    value: JsonScalar

    def __post_init__(self) -> None:
        check_str(self.column, "column")
        object.__setattr__(self, "path", tuple(_checked_path(self.path)))
        if not isinstance(self.op, str) or self.op not in OPERATORS:
            raise InvalidArgumentError(f"op: must be one of {sorted(OPERATORS)}, got {self.op!r}")
        _check_value(self.value, self.op)


def _checked_path(path: Any) -> list[str | int]:
    if isinstance(path, str | int):
        path = (path,)
    if not isinstance(path, Sequence) or not path or len(path) > MAX_PATH_DEPTH:
        raise InvalidArgumentError(f"path: must hold 1 to {MAX_PATH_DEPTH} keys, got {path!r}")
    for key in path:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise InvalidArgumentError(f"path: keys must be strings or array indexes, got {key!r}")
        if isinstance(key, int):
            check_int(key, "path: array indexes", 0)
        elif not key or len(key) > MAX_KEY_LENGTH or _BAD_KEY.search(key):
            raise InvalidArgumentError(
                f"path: key {key!r} must be 1 to {MAX_KEY_LENGTH} characters without quotes, "
                "backslashes or control characters"
            )
        elif key.startswith("-"):
            # MariaDB's JSON paths never find such a key, quoted or escaped ($."-" is NULL
            # for {"-": 1}): refused, so that no backend answers differently.
            raise InvalidArgumentError(
                f"path: key {key!r} starts with '-', which MariaDB's JSON paths cannot look up"
            )
        else:
            check_str(key, "path")
    return list(path)


def _check_value(value: Any, op: str) -> None:
    if value is None or isinstance(value, bool):
        if op not in ("==", "!="):
            raise InvalidArgumentError(
                f"op: {value!r} can only be compared with == or !=, not {op!r}"
            )
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"value: must be a finite number, got {value!r}")
    if isinstance(value, str):
        check_str(value, "value")
    elif not isinstance(value, int | float):
        # Any int is fine: _number_branch turns it into exact conditions on 64-bit integers and
        # doubles, never a raw bound value a driver could overflow on.
        raise InvalidArgumentError(f"value: must be a string, number, bool or None, got {value!r}")


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


# -- numbers -------------------------------------------------------------------------------------
#
# A document's number is either an integer (compared exactly, within the 64-bit range SQLite can
# read) or a double. The filter's value is turned, in Python, into an exact condition on each of
# the two: ``x < 2.5`` on integers is ``x <= 2``, ``x == 2**53 + 1`` on doubles is never true
# and ``x < 2**53 + 1`` is ``x <= 2.0**53``. Each backend then compares like with like (integers
# with an integer, doubles with a double), which every backend does exactly.

_Condition = tuple[str, int | float] | bool


def _between(op: str, low: int | float | None, high: int | float | None) -> _Condition:
    """The condition ``x op v`` for a ``v`` strictly between neighbours ``low`` and ``high``."""
    if op in ("==", "!="):
        return op == "!="
    if op in ("<", "<="):
        return False if low is None else ("<=", low)
    return False if high is None else (">=", high)


def _on_integers(op: str, value: int | float) -> _Condition:
    if isinstance(value, int):
        exact: int | None = value if INT64_MIN <= value <= INT64_MAX else None
        low: int | None = value if exact is None else None
        high = low
    else:
        exact = int(value) if value.is_integer() and INT64_MIN <= value <= INT64_MAX else None
        low, high = math.floor(value), math.ceil(value)
    if exact is not None:
        return (op, exact)
    assert low is not None
    assert high is not None
    low = None if low < INT64_MIN else min(low, INT64_MAX)
    high = None if high > INT64_MAX else max(high, INT64_MIN)
    return _between(op, low, high)


def _on_doubles(op: str, value: int | float) -> _Condition:
    if isinstance(value, float):
        return (op, value)
    try:
        nearest = float(value)
    except OverflowError:
        nearest = math.inf if value > 0 else -math.inf
    if nearest == value:  # Python compares an int with a float exactly
        return (op, nearest)
    if nearest < value:
        low, high = nearest, math.nextafter(nearest, math.inf)
    else:
        low, high = math.nextafter(nearest, -math.inf), nearest
    return _between(op, low if math.isfinite(low) else None, high if math.isfinite(high) else None)


def _number_branch(
    is_kind: ColumnElement[bool], operand: ColumnElement[Any], condition: _Condition
) -> ColumnElement[bool]:
    if condition is True:
        return is_kind
    if condition is False:
        return false()
    op, bound = condition
    # CASE, not AND: SQL does not promise to test the type before casting, and PostgreSQL's cast
    # of a non-numeric string fails the whole query.
    return _compare(case((is_kind, operand), else_=None), op, bound)


# -- the condition -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Access:
    """How one backend reads the value at a path: its JSON type and the value as each kind."""

    is_null: ColumnElement[bool]
    is_true: ColumnElement[bool]
    is_false: ColumnElement[bool]
    is_string: ColumnElement[bool]
    is_integer: ColumnElement[bool]
    is_double: ColumnElement[bool]
    as_text: ColumnElement[Any]
    as_integer: ColumnElement[Any]
    as_double: ColumnElement[Any]
    present: ColumnElement[bool]


def _postgresql_access(column: ColumnElement[Any], path: Sequence[str | int]) -> _Access:
    # A strict jsonpath: a key step only enters objects and an index step only arrays ("#>"
    # with '{0}' would read key "0" of an object and index 0 of an array alike); silent=true
    # makes a missing step NULL instead of an error.
    steps = "".join(f"[{key}]" if isinstance(key, int) else f'."{key}"' for key in path)
    value = func.jsonb_path_query_first(
        column,
        cast(bindparam(None, "strict $" + steps, type_=Text), postgresql.JSONPATH),
        cast(literal("{}"), postgresql.JSONB),
        true(),
        type_=postgresql.JSONB,
    )
    json_type = func.jsonb_typeof(value)
    text = value.op("#>>", return_type=Text)(literal_column("'{}'::text[]"))
    is_number = json_type == "number"
    # The package writes doubles with a fractional part ("7.0") and JSONB keeps it as written,
    # so a number's text tells integers from doubles.
    has_point = text.contains(".", autoescape=False)
    whole = case((and_(is_number, ~has_point), cast(text, Numeric)), else_=None)
    return _Access(
        is_null=json_type == "null",
        is_true=and_(json_type == "boolean", text == "true"),
        is_false=and_(json_type == "boolean", text == "false"),
        is_string=json_type == "string",
        is_integer=whole.between(INT64_MIN, INT64_MAX),
        is_double=and_(is_number, has_point),
        # "C": byte order of UTF-8, which is code point order, as on SQLite and MariaDB.
        as_text=text.collate("C"),
        as_integer=cast(text, Numeric),
        as_double=cast(text, Double),
        present=json_type.is_not(None),
    )


class _DoubleOf(FunctionElement[float]):
    """``CAST(x AS DOUBLE)``: SQLAlchemy skips casts to DOUBLE on MySQL, where FLOAT is single."""

    type = Double()
    inherit_cache = True


@compiles(_DoubleOf)
def _compile_double_of(element: _DoubleOf, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DOUBLE)"


def _mysql_access(column: ColumnElement[Any], path: Sequence[str | int]) -> _Access:
    extracted = func.json_extract(column, bindparam(None, _json_path(path), type_=Text))
    json_type = func.json_type(extracted)
    # MariaDB reads "$[0]" of an object or a scalar as the value itself: an index step counts
    # only where the value before it is an array.
    arrays = [
        func.json_type(func.json_extract(column, bindparam(None, _json_path(path[:at]), Text)))
        == "ARRAY"
        for at, key in enumerate(path)
        if isinstance(key, int)
    ]
    text = func.json_unquote(extracted)
    whole = case((json_type == "INTEGER", cast(text, mysql.DECIMAL(65, 0))), else_=None)
    return _Access(
        is_null=json_type == "NULL",
        is_true=and_(json_type == "BOOLEAN", text == "true"),
        is_false=and_(json_type == "BOOLEAN", text == "false"),
        is_string=json_type == "STRING",
        is_integer=whole.between(INT64_MIN, INT64_MAX),
        is_double=json_type == "DOUBLE",
        # Binary strings compare byte by byte: no padding, no case folding (utf8mb4_bin pads
        # spaces, and the database's default collation often folds case), code point order.
        as_text=cast(text, mysql.BINARY()),
        as_integer=cast(text, mysql.DECIMAL(65, 0)),
        # DOUBLE, never FLOAT: MariaDB's FLOAT is single precision.
        as_double=_DoubleOf(text),
        present=and_(json_type.is_not(None), *arrays),
    )


def _sqlite_access(column: ColumnElement[Any], path: Sequence[str | int]) -> _Access:
    bound = bindparam(None, _json_path(path), type_=Text)
    json_type = func.json_type(column, bound)
    value = func.json_extract(column, bound)
    return _Access(
        is_null=json_type == "null",
        is_true=json_type == "true",
        is_false=json_type == "false",
        is_string=json_type == "text",
        # json_extract reads an integer beyond 64 bits as a (rounded) real: those are left out.
        is_integer=and_(json_type == "integer", func.typeof(value) == "integer"),
        is_double=json_type == "real",
        as_text=value,
        as_integer=value,
        as_double=value,
        present=json_type.is_not(None),
    )


def json_condition(
    table: Table, columns: dict[str, str], condition: JsonFilter, dialect: str
) -> ColumnElement[bool]:
    """The SQL condition for ``condition`` on ``table`` for the named dialect.

    ``columns`` maps the attribute names callers use to the table's JSON column names. Raises
    ``ValueError`` naming ``column`` for a column that is not one of them.
    """
    if condition.column not in columns:
        raise InvalidArgumentError(
            f"column: {condition.column!r} is not a JSON column of {table.name}; "
            f"use one of {sorted(columns)}"
        )
    column = table.c[columns[condition.column]]
    family = backend_family(dialect)
    read = (
        _postgresql_access
        if family == "postgresql"
        else _mysql_access
        if family == "mysql"
        else _sqlite_access
    )
    access = read(column, condition.path)
    value, op = condition.value, condition.op
    if value is None:
        # "!= None": the key is present with any value but null.
        found = access.is_null if op == "==" else and_(access.present, ~access.is_null)
    elif isinstance(value, bool):
        # "!= True" is "== False": a filter only ever matches values of its own JSON type.
        found = access.is_true if value == (op == "==") else access.is_false
    elif isinstance(value, str):
        right: Any = value
        if family == "mysql":  # bytes against bytes, as the document's side
            right = cast(bindparam(None, value, type_=Text), mysql.BINARY())
        found = _compare(case((access.is_string, access.as_text), else_=None), op, right)
    else:
        found = or_(
            _number_branch(access.is_integer, access.as_integer, _on_integers(op, value)),
            _number_branch(access.is_double, access.as_double, _on_doubles(op, value)),
        )
    return and_(access.present, found)
