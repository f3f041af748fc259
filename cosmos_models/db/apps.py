"""Apps' own tables beside ours: a MetaData their foreign keys resolve in, and an Alembic filter.

An app declares its SQLModel tables on ``app_metadata()`` (a MetaData of its own that also holds
copies of our tables, so ``Field(foreign_key="runs.id")`` resolves) and manages them with its own
Alembic history and version table. ``include_app_object`` keeps that history to the app's
tables: its autogenerate never proposes to create, change or drop ours (nor our version table),
and ours never sees its tables (``migrate.include_object`` takes only our tables).
"""

from typing import Any, Final

from sqlalchemy import MetaData, Table

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.revisions import OUR_TABLES, VERSION_TABLE
from cosmos_models.db.tables import TABLES
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.types import NAMING_CONVENTION

# Our tables and our version table: never the business of an app's migrations.
_OURS: Final = OUR_TABLES | {VERSION_TABLE}


def app_metadata() -> MetaData:
    """A new ``MetaData`` for an app's tables, holding copies of ours for its foreign keys.

    It has the package's naming convention, so the app's constraints get names every backend can
    drop. Declare tables on it with ``class AppModel(SQLModel, registry=registry(metadata=m))``;
    the copies of ``prompts``, ``runs`` and ``progress`` are only there to be referred to
    (``create_app_tables`` and ``include_app_object`` leave them out). On MariaDB a text
    column that refers to ours must share its collation: give the table
    ``__table_args__ = (EXACT_TEXT_TABLE_OPTIONS,)`` (from ``cosmos_models.models.types``).
    """
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    for table in TABLES.values():
        table.to_metadata(metadata)
    return metadata


def app_tables(metadata: MetaData) -> list[Table]:
    """The app's own tables of ``metadata`` (ours left out), parents first.

    Raises ``InvalidArgumentError`` unless ``metadata`` is a ``MetaData``.
    """
    if not isinstance(metadata, MetaData):
        raise InvalidArgumentError(f"metadata: must be a MetaData, got {type(metadata).__name__}")
    return [table for table in metadata.sorted_tables if table.name not in _OURS]


def include_app_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """An Alembic ``include_object`` for an app's ``env.py``: everything but our tables.

    Leaves out ``prompts``, ``runs``, ``progress`` and ``cosmos_models_version`` (and, with
    them, their columns, indexes and constraints), whether in the app's metadata or reflected.
    """
    if type_ == "table":
        return name not in _OURS
    return True


def create_app_tables(db: DatabaseConnection, metadata: MetaData) -> None:
    """Create the app's tables of ``metadata`` that are missing (tests, prototypes).

    Production apps use their Alembic history instead. Our tables must exist already (their
    foreign keys refer to them). Raises ``InvalidArgumentError`` for wrong arguments,
    ``DatabaseError`` if the database refuses.
    """
    if not isinstance(db, DatabaseConnection):
        raise InvalidArgumentError(f"db: must be a DatabaseConnection, got {type(db).__name__}")
    tables = app_tables(metadata)
    with db.begin() as connection:
        metadata.create_all(connection, tables=tables)
