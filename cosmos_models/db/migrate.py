"""Programmatic Alembic: upgrade, downgrade, current revision, schema check.

``upgrade()`` is what ``make migrate`` and ``init_database()`` run. Around Alembic it adds what a
user's data needs:

* one migrator at a time: a PostgreSQL advisory lock, a MariaDB named lock, and on SQLite an
  ``flock`` on the file plus ``BEGIN IMMEDIATE``; the revision is read again under the lock, so a
  second process finds the work done and does nothing;
* a database newer than the code (or at a revision it does not know) is refused, untouched;
* before a SQLite file changes it is copied with SQLite's online backup API next to itself;
* databases written by the earlier implementation (no migration history) are adopted
  (``cosmos_models.db.legacy``);
* on SQLite, foreign keys are off while the schema changes (a batch table rebuild drops and
  recreates tables, and with foreign keys on, dropping ``runs`` would cascade-delete every
  progress row) and ``PRAGMA foreign_key_check`` must come back empty before the commit.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.locations import get_database_url, parse_location
from cosmos_models.db.migrator import UpgradeResult, migrate_database
from cosmos_models.db.revisions import (
    VERSION_TABLE,
    Report,
    downgrade_drops,
    head_revision,
    recorded_revision,
    undone_revisions,
)
from cosmos_models.errors import InvalidArgumentError, SchemaNotCurrentError
from cosmos_models.models.types import JSONDocument, backend_family, metadata

# The binary NO PAD collations migration 0004 gives text columns (MariaDB; MySQL 8).
_EXACT_COLLATIONS = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})


@contextmanager
def _opened(
    url: Any, *, migrating: bool = False, read_only: bool = False
) -> Iterator[DatabaseConnection]:
    """The caller's ``DatabaseConnection``, or one opened (and closed) for ``url``.

    One opened for a migration leaves a SQLite file's journal mode alone; ``read_only`` opens
    SQLite read-only and never creates a file.
    """
    if isinstance(url, DatabaseConnection):
        yield url
        return
    db = DatabaseConnection(url, sqlite_wal=not migrating, read_only=read_only)
    try:
        yield db
    finally:
        db.close()


def current_revision(url: Any = None) -> str | None:
    """The revision the database is at (``None`` for an empty or earlier-implementation one).

    Opens read-only: a missing SQLite file is not created. Raises ``DatabaseError`` if the
    database cannot be reached, is not a database, or (SQLite) does not exist.
    """
    with _opened(url, read_only=True) as db, db.connect(read_only=True) as connection:
        return recorded_revision(connection)


def check_schema(db: DatabaseConnection) -> str:
    """Check that the database is at the package's newest revision; return that revision.

    For app processes at startup: one cheap read of the version table, no lock, nothing written,
    so that migrations run once (``cosmos-models db upgrade``, ``make migrate``, a deploy step)
    rather than in every worker. Raises ``SchemaNotCurrentError`` (a ``MigrationError``) naming
    the command to run when the database is behind, ahead or never migrated,
    ``InvalidArgumentError`` unless ``db`` is a ``DatabaseConnection``, and ``DatabaseError`` if
    the database cannot be reached.
    """
    if not isinstance(db, DatabaseConnection):
        raise InvalidArgumentError(f"db: must be a DatabaseConnection, got {type(db).__name__}")
    with db.connect(read_only=True) as connection:
        current = recorded_revision(connection)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrentError(current, head)
    return head


# -- locks and SQLite safety --------------------------------------------------------------------


# -- upgrade / downgrade --------------------------------------------------------------------


def upgrade(
    url: Any = None,
    revision: str = "head",
    *,
    backup: bool = True,
    report: Report | None = None,
) -> UpgradeResult:
    """Bring the database (default: ``get_database_url()``) to ``revision``.

    Creates a missing SQLite file; adopts an earlier-implementation database; no-op when already
    there. ``url`` may be a location or a ``DatabaseConnection``. Raises ``MigrationError`` (the
    database unchanged) for an unknown revision, an unadoptable database, or a failed step.
    """
    return _migrate(url, revision, backup=backup, report=report, direction="upgrade")


def downgrade(
    url: Any = None,
    revision: str = "-1",
    *,
    backup: bool = True,
    report: Report | None = None,
) -> UpgradeResult:
    """Take the database down to ``revision`` (default: one step). Raises ``MigrationError``."""
    return _migrate(url, revision, backup=backup, report=report, direction="downgrade")


def _migrate(
    url: Any, revision: str, *, backup: bool, report: Report | None, direction: str
) -> UpgradeResult:
    with _opened(url, migrating=True) as db:
        return migrate_database(db, revision, backup=backup, report=report, direction=direction)


# -- what a downgrade loses ----------------------------------------------------------------------


def downgrade_losses(url: Any, revision: str) -> list[str]:
    """What a downgrade to ``revision`` would drop that holds data, e.g. ``"table runs (3 rows)"``.

    Empty when nothing with data would go. Opens read-only; raises ``DatabaseError``.
    """
    losses: list[str] = []
    with _opened(url, read_only=True) as db, db.connect(read_only=True) as connection:
        tables = set(inspect(connection).get_table_names())
        undone = [
            downgrade_drops(step)
            for step in undone_revisions(recorded_revision(connection), revision)
        ]
        # A column of a table that an older step drops whole is counted with the table.
        dropped_whole = {table for drops in undone for table, cols in drops.items() if cols is None}
        for drops in undone:
            for table, columns in drops.items():
                if table not in tables or (columns is not None and table in dropped_whole):
                    continue
                if columns is None:
                    count = connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
                    if count:
                        losses.append(f"table {table} ({count:,} rows)")
                    continue
                for column in columns:
                    count = connection.execute(
                        text(f"SELECT COUNT({column}) FROM {table}")
                    ).scalar_one()
                    if count:
                        losses.append(f"column {table}.{column} ({count:,} values)")
    return losses


def downgrade_refusal(url: Any, revision: str, *, backup: bool) -> str | None:
    """Why a downgrade to ``revision`` must not run without being confirmed, or ``None``.

    It must not when it would drop tables or columns holding data and no backup is taken first
    (a SQLite file with ``backup`` on is copied before it changes). Raises ``ValueError`` for an
    invalid location and ``DatabaseError`` if the database cannot be read.
    """
    location = url.url if isinstance(url, DatabaseConnection) else url
    parsed = parse_location(get_database_url() if location is None else location)
    if backup and parsed.get_backend_name() == "sqlite" and parsed.database:
        return None
    losses = downgrade_losses(url, revision)
    if not losses:
        return None
    return f"downgrade to {revision!r} would drop {'; '.join(losses)}"


# -- schema check ---------------------------------------------------------------------------


def compare_type(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Alembic type comparison that knows the backends' spellings of the package's types."""
    if backend_family(context.dialect) == "mysql":
        # MariaDB reports JSON columns as LONGTEXT (with a JSON_VALID check).
        impl = metadata_type.dialect_impl(context.dialect)
        if type(impl).__name__ == "JSON" and type(inspected_type).__name__ == "LONGTEXT":
            return False
    return None  # Alembic's default comparison


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Only the package's own tables take part in autogenerate (apps may keep theirs alongside)."""
    if type_ == "table":
        return name in metadata.tables
    return True


def schema_differences(url: Any = None) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty: in sync).

    Opens read-only. Raises ``DatabaseError`` like ``current_revision``.
    """
    with _opened(url, read_only=True) as db, db.connect(read_only=True) as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": compare_type,
                "include_object": include_object,
                "target_metadata": metadata,
                "version_table": VERSION_TABLE,
            },
        )
        differences: list[Any] = list(compare_metadata(context, metadata))
        differences.extend(_unseen_differences(connection))
        return differences


def _unseen_differences(connection: Connection) -> list[str]:
    """What autogenerate cannot see: the revision, SQLite AUTOINCREMENT, MariaDB collations.

    A database stamped at head without running 0003/0004 (or downgraded by hand) would otherwise
    pass the check while reusing ids or comparing ``'RS_ABC' = 'rs_abc '``.
    """
    found: list[str] = []
    revision = recorded_revision(connection)
    if revision != head_revision():
        found.append(
            f"revision {revision or '(none)'} is not head {head_revision()}: "
            "run cosmos-models db upgrade"
        )
    family = backend_family(connection.dialect)
    tables = set(inspect(connection).get_table_names())
    if family == "sqlite" and "progress" in tables:
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'progress'"
        ).scalar()
        if "AUTOINCREMENT" not in str(sql).upper():
            found.append("table progress is not AUTOINCREMENT: deleted ids would be reused")
    if family == "mysql":
        rows = connection.execute(
            text(
                "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND collation_name IS NOT NULL "
                "AND table_name IN ('prompts', 'runs', 'progress') "
            )
        ).all()
        # JSON columns are LONGTEXT with a JSON_VALID check on MariaDB and keep utf8mb4_bin:
        # their text is never compared as a whole (filters extract and compare values).
        json_columns = {
            (table.name, column.name)
            for table in metadata.tables.values()
            for column in table.columns
            if isinstance(column.type, JSONDocument)
        }
        for table, column, collation in rows:
            if (table, column) not in json_columns and collation not in _EXACT_COLLATIONS:
                found.append(
                    f"column {table}.{column} has collation {collation}: comparisons are not "
                    "exact (run cosmos-models db upgrade)"
                )
    return found
