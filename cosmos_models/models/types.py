"""Column and field types shared by every table.

Why one module: each backend needs its own answer to the same three questions (how to store an
aware UTC datetime, how to store JSON, how to store a string enum), and the answers must agree, so
that a row written on SQLite reads back the same on PostgreSQL or MariaDB.
"""

import enum
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, Strict
from sqlalchemy import JSON, DateTime, Dialect, MetaData, String, Text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.types import TypeDecorator, TypeEngine

from cosmos_models.errors import InvalidArgumentError

# Constraint and index names are derived, never left to the backend, so that a migration can drop
# them by name on any backend (SQLite batch mode needs names; MySQL invents different ones).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The ``MetaData`` that holds the package's tables (and nothing else)."""

ID_LENGTH = 255
NAME_LENGTH = 100
# MariaDB's JSON_VALID refuses documents nested deeper than 32 levels (a scalar counts as one),
# so containers may nest 31 deep, the top-level object included. Checked on every backend.
MAX_JSON_DEPTH = 31
# About 4,200 digits: Python refuses to print or parse longer integers (int_max_str_digits), so
# a longer one could be neither serialized nor read back.
MAX_JSON_INT_BITS = 14_000


EXACT_TEXT_COLLATION = "utf8mb4_nopad_bin"
"""MariaDB's exact collation: binary, NO PAD (``utf8mb4_bin`` pads: ``'a ' = 'a'``)."""

EXACT_TEXT_TABLE_OPTIONS: dict[str, str] = {
    f"{dialect}_{option}": value
    for dialect in ("mysql", "mariadb")  # SQLAlchemy reads the options of its dialect's name
    for option, value in (("charset", "utf8mb4"), ("collate", EXACT_TEXT_COLLATION))
}
"""Table options that make every text column of a table compare exactly on MariaDB.

Ids, worker ids, statuses and names are compared with ``=`` by the package; under a database's
default collation (often case- and accent-insensitive) ``'RS_ABC' = 'rs_abc '`` would hold.
Migration 0004 converts existing tables; MySQL 8, which lacks this collation, gets its NO PAD
binary ``utf8mb4_0900_bin`` from the migration (tables are created by migrations, not
``create_all``). SQLite (BINARY) and PostgreSQL (deterministic collations) are exact already.
"""


def backend_family(dialect: Dialect | str) -> str:
    """``"mysql"`` for MySQL and MariaDB (SQLAlchemy names them apart), else the dialect's name."""
    name = dialect if isinstance(dialect, str) else dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# Validation of values (pydantic side)
# --------------------------------------------------------------------------------------------


def _check_text(value: str) -> str:
    if "\x00" in value:
        raise InvalidArgumentError("must not contain NUL characters")
    _check_unicode(value, "text")
    return value


def _check_unicode(value: str, what: str) -> None:
    # A lone surrogate (from a bad decode or a JSON "\ud800" escape) cannot be encoded as UTF-8:
    # every driver fails on it at insert time, so it is refused here, naming the field.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"{what} must be valid Unicode (lone surrogate)") from None


def _check_required_text(value: str) -> str:
    if not value.strip():
        raise InvalidArgumentError("must not be empty or whitespace")
    return _check_text(value)


def _not_a_number(value: Any) -> Any:
    # Pydantic would read a number as Unix seconds; a stray 3.5 becoming 1970-01-01T00:00:03.5Z
    # is a silent error, so timestamps must be datetimes or ISO-8601 text.
    if isinstance(value, int | float):
        raise InvalidArgumentError("must be a datetime or an ISO-8601 string, not a number")
    return value


# The times every backend stores and reads back exactly, in UTC: MariaDB's DATETIME is documented
# for the years 1000 to 9999 (PostgreSQL and SQLite hold more). The last day is left out because
# psycopg reads a timestamptz in the session's time zone: 9999-12-31 23:00 UTC is year 10000 at
# +09:00, which Python cannot hold (up to +14:00 exists, so one day of margin covers them all).
MIN_TIMESTAMP = datetime(1000, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            "must be timezone-aware; got a naive datetime (use datetime.now(timezone.utc))"
        )
    try:
        moment = value.astimezone(UTC)
    except OverflowError:  # e.g. year 1 at +14:00 is year 0 in UTC
        moment = None
    if moment is None or not MIN_TIMESTAMP <= moment <= MAX_TIMESTAMP:
        raise InvalidArgumentError(
            f"must lie between {MIN_TIMESTAMP.isoformat()} and {MAX_TIMESTAMP.isoformat()} "
            f"in UTC, got {value.isoformat()}"
        )
    return moment


def _check_json_string(value: str, where: str) -> None:
    if "\x00" in value:
        raise InvalidArgumentError(f"{where}: strings must not contain NUL characters")
    _check_unicode(value, f"{where}: strings")


def check_json_value(value: Any, where: str = "value", depth: int = 0) -> None:
    """Raise ``ValueError`` unless ``value`` is plain JSON that every backend stores exactly.

    Accepted: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite ``float``, ``bool``
    and ``None`` (subclasses too), nested at most ``MAX_JSON_DEPTH`` containers deep.
    """
    plain_json(value, where, depth)


def plain_json(value: Any, where: str = "value", depth: int = 0) -> Any:
    """Return ``value`` checked as ``check_json_value`` does, with subclasses made plain.

    A ``float``, ``int`` or ``str`` subclass (numpy's ``float64``, an ``IntEnum``, a ``StrEnum``)
    becomes its plain value, so that what is stored is the value, never a subclass's ``repr``.
    ``value`` itself is returned when nothing needed changing (callers test identity). Raises
    ``ValueError`` naming the path of the first bad value.
    """
    kind = type(value)
    if kind is str:
        _check_json_string(value, where)
    elif kind is float:
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"{where}: {value!r} is not valid JSON (NaN and infinity are not)"
            )
    elif kind is int:
        if value.bit_length() > MAX_JSON_INT_BITS:
            raise InvalidArgumentError(
                f"{where}: integer too large to store ({value.bit_length()} bits)"
            )
    elif isinstance(value, dict | list):
        return _plain_container(value, where, depth)
    elif not (value is None or kind is bool):
        return _plain_subclass(value, where, depth)
    return value


def _plain_container(value: dict[Any, Any] | list[Any], where: str, depth: int) -> Any:
    if depth + 1 > MAX_JSON_DEPTH:
        raise InvalidArgumentError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list):
        items = [
            plain_json(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)
        ]
        unchanged = all(new is old for new, old in zip(items, value, strict=True))
        return value if unchanged else items
    changed = False
    result: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(
                f"{where}: object keys must be strings, got {type(key).__name__}"
            )
        plain_key = key if type(key) is str else str.__str__(key)
        _check_json_string(plain_key, where)
        new = plain_json(item, f"{where}.{plain_key}", depth + 1)
        changed = changed or new is not item or plain_key is not key
        result[plain_key] = new
    return result if changed else value


def _plain_subclass(value: Any, where: str, depth: int) -> Any:
    # bool cannot be subclassed; int subclasses are IntEnum and the like.
    if isinstance(value, int):
        return plain_json(int.__int__(value), where, depth)
    if isinstance(value, float):
        return plain_json(float.__float__(value), where, depth)
    if isinstance(value, str):
        return plain_json(str.__str__(value), where, depth)
    raise InvalidArgumentError(f"{where}: {type(value).__name__} is not JSON-serializable")


def _float_text(value: float) -> str:
    # Positional notation with a fractional part: PostgreSQL's JSONB keeps numbers as exact
    # decimals and prints them back as written, so 1e16 stored as "1e+16" would come back as the
    # integer 10000000000000000. "10000000000000000.0" comes back as the same float.
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{value!r} is not valid JSON")
    # float.__repr__, not repr(): a subclass's repr (numpy 2: "np.float64(7.5)") is not a number.
    text = format(Decimal(float.__repr__(value)), "f")
    return text if "." in text else f"{text}.0"


def dumps_json(value: Any) -> str:
    """Serialize checked JSON so that it reads back exactly on every backend (floats included)."""
    parts: list[str] = []
    _encode(value, parts.append)
    return "".join(parts)


def _encode(value: Any, out: Callable[[str], None]) -> None:
    if isinstance(value, str):
        out(json.dumps(value, ensure_ascii=False))
    elif value is None or isinstance(value, bool):
        out("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out(int.__repr__(value))  # an IntEnum's str() may be its name
    elif isinstance(value, float):
        out(_float_text(value))
    elif isinstance(value, dict):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):  # json.dumps would write {0: …}, which is not JSON
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            out(("," if index else "") + json.dumps(key, ensure_ascii=False) + ":")
            _encode(item, out)
        out("}")
    elif isinstance(value, list | tuple):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _encode(item, out)
        out("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = plain_json(value, "value")
    return checked


# Text is strict: Pydantic would otherwise decode bytes into str without a word.
RequiredText = Annotated[str, Strict(), AfterValidator(_check_required_text)]
"""A string that must hold something other than whitespace (and no NUL)."""

OptionalText = Annotated[str, Strict(), AfterValidator(_check_text)]
"""Any string, empty allowed, but no NUL characters (PostgreSQL cannot store them)."""

Identifier = Annotated[
    str, Strict(), Field(max_length=ID_LENGTH), AfterValidator(_check_required_text)
]
Name = Annotated[str, Strict(), Field(max_length=NAME_LENGTH), AfterValidator(_check_required_text)]

UtcDatetime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_to_utc)]
"""A datetime that must be timezone-aware; it is converted to UTC."""

JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json_object)]
"""A JSON object (``dict`` with ``str`` keys) that every backend stores exactly."""

Percentage = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


# --------------------------------------------------------------------------------------------
# Column types (SQLAlchemy side)
# --------------------------------------------------------------------------------------------


class _SQLiteUTCText(sqlite.DATETIME):
    """SQLite's DATETIME column, with values converted by ``UTCDateTime`` alone.

    SQLAlchemy's own SQLite DATETIME formats and parses in Python, field by field; ``isoformat``
    and ``fromisoformat`` do the same in C, which matters on the batch-insert hot path.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend, microseconds kept.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``. SQLite and MariaDB have no time zones, so the
    UTC wall time is stored naive (``DATETIME(6)`` on MariaDB; on SQLite the text
    ``YYYY-MM-DD HH:MM:SS.ffffff``, always with six digits so that text order is time order, the
    same text the earlier implementation wrote) and the zone is put back on the way out. Naive
    values are refused on the way in: guessing their zone is how timelines get silently shifted.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        family = backend_family(dialect)
        if family == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if family == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(_SQLiteUTCText())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | str | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is not UTC:  # validated values are UTC already: the hot path skips this
            value = _to_utc(value)
        family = backend_family(dialect)
        if family == "postgresql":
            return value
        if family == "mysql":
            return value.replace(tzinfo=None)
        # 'YYYY-MM-DD HH:MM:SS.ffffff+00:00' without its fixed '+00:00'
        return value.isoformat(sep=" ", timespec="microseconds")[:-6]

    def process_result_value(
        self, value: datetime | str | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONDocument(TypeDecorator[Any]):
    """JSON on SQLite and MariaDB, JSONB on PostgreSQL."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(JSON())


def json_column_type() -> TypeEngine[Any]:
    """The type of a JSON-object column: in-place changes (``d["k"] = v``) are tracked."""
    return MutableDict.as_mutable(JSONDocument())


def long_text_type() -> TypeEngine[str]:
    """Text of any length: ``TEXT`` elsewhere, ``LONGTEXT`` on MariaDB (its TEXT stops at 64 KB)."""
    return Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


E = TypeVar("E", bound=enum.Enum)


class StrEnumType(TypeDecorator[E]):
    """A string enum stored by its value in a ``VARCHAR`` (never a native ``ENUM`` type).

    Native enums store member names and leave types behind on PostgreSQL; a ``VARCHAR`` plus a
    named CHECK constraint (declared on the table) migrates the same way on every backend.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        super().__init__(length=length)
        self.enum_class = enum_class

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(self.enum_class(value).value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        return self.enum_class(value)
