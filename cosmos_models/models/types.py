"""Column and field types shared by every table.

Why one module: each backend needs its own answer to the same three questions (how to store an
aware UTC datetime, how to store JSON, how to store a string enum), and the answers must agree, so
that a row written on SQLite reads back the same on PostgreSQL or MariaDB.
"""

import enum
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field, Strict
from sqlalchemy import JSON, DateTime, Dialect, MetaData, String, Text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.types import TypeDecorator, TypeEngine

from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.values import (
    _check_json_object,
    _check_required_text,
    _check_text,
)

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


def _not_a_number(value: Any) -> Any:
    # Pydantic would read a number as Unix seconds; a stray 3.5 becoming 1970-01-01T00:00:03.5Z
    # is a silent error, so timestamps must be datetimes or ISO-8601 text.
    if isinstance(value, (int, float)):  # a tuple: faster than a union on this hot path
        raise InvalidArgumentError("must be a datetime or an ISO-8601 string, not a number")
    return value


# The times every backend stores and reads back exactly, in UTC: MariaDB's DATETIME is documented
# for the years 1000 to 9999 (PostgreSQL and SQLite hold more). The last day is left out because
# psycopg reads a timestamptz in the session's time zone: 9999-12-31 23:00 UTC is year 10000 at
# +09:00, which Python cannot hold (up to +14:00 exists, so one day of margin covers them all).
MIN_TIMESTAMP = datetime(1000, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # the common case: aware, and no conversion (nor a new object)
        moment: datetime | None = value
    elif value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(
            "must be timezone-aware; got a naive datetime (use datetime.now(timezone.utc))"
        )
    else:
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


Processor = Callable[[Any], Any]
"""A column's result processor: the driver's value in, the column's value out."""


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


def _sqlite_utc_texts(values: list[datetime]) -> list[Any]:
    # 'YYYY-MM-DD HH:MM:SS.ffffff+00:00' without its fixed '+00:00' (positional arguments:
    # keywords cost a fifth more, on every timestamp of a batch)
    return [value.isoformat(" ", "microseconds")[:-6] for value in values]


def _naive_utc(values: list[datetime]) -> list[Any]:
    return [value.replace(tzinfo=None) for value in values]


def _aware_utc(values: list[datetime]) -> list[Any]:
    return values


_UTC_STORAGE: Final[dict[str, Callable[[list[datetime]], list[Any]]]] = {
    "postgresql": _aware_utc,
    "mysql": _naive_utc,
}


def utc_storage(dialect: Dialect) -> Callable[[list[datetime]], list[Any]]:
    """How ``UTCDateTime`` hands aware UTC datetimes to ``dialect``'s driver, a list at a time.

    For values already checked and converted to UTC; the batch-insert path converts a whole
    batch with one call (one comprehension, no call per value).
    """
    return _UTC_STORAGE.get(backend_family(dialect), _sqlite_utc_texts)


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
        return utc_storage(dialect)([value])[0]  # type: ignore[no-any-return]

    def process_result_value(
        self, value: datetime | str | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            # The storage text, 'YYYY-MM-DD HH:MM:SS.ffffff', parsed with its zone in one C call:
            # a tenth of the cost of parsing then adding the zone (reads convert 1,000s at once).
            if len(value) == _STORED_TEXT_LENGTH:
                return datetime.fromisoformat(value + "+00:00")
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return datetime.combine(value, value.time(), UTC)  # 4x faster than replace(tzinfo=)
        return value if value.tzinfo is UTC else value.astimezone(UTC)

    def lean_processor(
        self, dialect: Dialect, coltype: Any, standard: Processor | None
    ) -> Processor | None:
        """``process_result_value`` with its common cases inline (see ``lean_result_processor``):
        the stored text, an aware UTC value (psycopg in a UTC session), a naive one (PyMySQL)."""
        if standard is None or self.impl_instance.result_processor(dialect, coltype) is not None:
            return standard
        general = self.process_result_value
        combine, from_text = datetime.combine, datetime.fromisoformat

        def process(value: Any) -> datetime | None:
            kind = value.__class__
            if kind is str and len(value) == _STORED_TEXT_LENGTH:
                return from_text(value + "+00:00")
            if kind is datetime:
                if value.tzinfo is UTC:
                    return value  # type: ignore[no-any-return]
                if value.tzinfo is None:
                    return combine(value, value.time(), UTC)
            return general(value, dialect)

        return process


_STORED_TEXT_LENGTH = len("2025-01-04 12:00:00.000000")
# One decoder for the documents read on the lean path (the standard settings of json.loads).
_decode_json: Final = json.JSONDecoder().raw_decode


def lean_result_processor(
    column_type: TypeEngine[Any], dialect: Dialect, coltype: Any
) -> Processor | None:
    """The result processor of ``column_type`` on ``dialect``, faster for the package's types.

    The same values out for the same values in as ``result_processor`` (what Core applies; a
    differential test compares them): SQLAlchemy's chain of a type decorator around its
    implementation costs a call or two per value, and ``json.loads`` checks and scans for
    whitespace around a document, where reads convert thousands of values per call.
    """
    implementation = column_type.dialect_impl(dialect)
    standard = implementation.result_processor(dialect, coltype)
    lean = getattr(implementation, "lean_processor", None)
    return standard if lean is None else lean(dialect, coltype, standard)


class JSONDocument(TypeDecorator[Any]):
    """JSON on SQLite and MariaDB, JSONB on PostgreSQL."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(JSON())

    def lean_processor(
        self, dialect: Dialect, coltype: Any, standard: Processor | None
    ) -> Processor | None:
        """``standard`` (the driver gives text: SQLite, PyMySQL) with a complete document
        decoded in one scan (see ``lean_result_processor``); anything else goes to ``standard``
        (whitespace around it, numbers, bytes, invalid text: its result or its error)."""
        custom = getattr(dialect, "_json_deserializer", None)
        if standard is None or custom not in (None, json.loads):
            return standard
        decode = _decode_json

        def process(value: Any) -> Any:
            if value.__class__ is str:
                try:
                    document, end = decode(value)
                except ValueError:
                    return standard(value)
                if end == len(value):
                    return document
            return standard(value)

        return process


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

    def lean_processor(
        self, dialect: Dialect, coltype: Any, standard: Processor | None
    ) -> Processor | None:
        """Members found by value in a table (see ``lean_result_processor``); a value that is
        no member's goes to ``process_result_value`` (which refuses it)."""
        if standard is None or self.impl_instance.result_processor(dialect, coltype) is not None:
            return standard
        member = {item.value: item for item in self.enum_class}.get
        general = self.process_result_value

        def process(value: Any) -> E | None:
            found = member(value)
            return general(value, dialect) if found is None else found

        return process
