"""Adopting databases written by the earlier implementation (``create_all``, no migrations).

Such a database has the three tables with the v0 columns, no migration history, naive UTC text
timestamps (SQLite), JSON as text, no indexes, and foreign keys that were never enforced. It is
adopted in one transaction, after a read-only check that refuses anything else untouched:

1. the v0 tables are renamed ``legacy_v0_*`` and revision 0001 creates the real ones;
2. every row whose parents exist is copied (ids, JSON text and timestamps kept exactly);
3. rows whose parent does not exist are kept, unchanged, in ``legacy_v0_orphan_runs`` and
   ``legacy_v0_orphan_progress`` (progress of an orphan run is itself an orphan);
4. NULL timestamps (the v0 columns allowed them) become ``1970-01-01 00:00:00 UTC``, a value that
   sorts first and cannot be mistaken for a real event, and each one is listed in
   ``legacy_v0_null_timestamps`` (table, row id, column) so the original NULL is never lost;
5. the ``legacy_v0_*`` copies are dropped, and the upgrade goes on to head.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, bindparam, inspect, text

from cosmos_models.db.sqlite_files import read_only_engine
from cosmos_models.errors import MigrationError
from cosmos_models.models.types import ID_LENGTH, NAME_LENGTH, UTCDateTime, backend_family

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PREFIX = "legacy_v0_"

LEGACY_COLUMNS: dict[str, tuple[str, ...]] = {
    "prompts": ("id", "model_type", "prompt_text", "created_at", "inputs", "parameters"),
    "runs": (
        "id",
        "prompt_id",
        "model_type",
        "status",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "execution_config",
        "outputs",
        "metadata",
    ),
    "progress": ("id", "run_id", "timestamp", "stage", "percentage", "message"),
}
JSON_COLUMNS = {
    "prompts": ("inputs", "parameters"),
    "runs": ("execution_config", "outputs", "metadata"),
}
# NOT NULL in the new schema, nullable in v0.
REQUIRED_TIMESTAMPS = {
    "prompts": ("created_at",),
    "runs": ("created_at", "updated_at"),
    "progress": ("timestamp",),
}
ALL_TIMESTAMPS = {
    "prompts": ("created_at",),
    "runs": ("created_at", "updated_at", "started_at", "completed_at"),
    "progress": ("timestamp",),
}
LENGTH_LIMITS = {
    "prompts": {"id": ID_LENGTH, "model_type": NAME_LENGTH},
    "runs": {"id": ID_LENGTH, "prompt_id": ID_LENGTH, "model_type": NAME_LENGTH},
    "progress": {"run_id": ID_LENGTH, "stage": NAME_LENGTH},
}
STATUSES = ("pending", "uploading", "running", "downloading", "completed", "failed", "cancelled")
# The text the earlier implementation wrote on SQLite: 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
_D = "[0-9]"
_SQLITE_TIME = f"{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}"
_SQLITE_TIME_GLOBS = (_SQLITE_TIME, f"{_SQLITE_TIME}.{_D * 6}")


@dataclass
class AdoptionReport:
    """What adopting an earlier-implementation database kept, moved aside and filled in."""

    copied: dict[str, int] = field(default_factory=dict)
    orphan_runs: int = 0
    orphan_progress: int = 0
    null_timestamps: int = 0

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the migration report."""
        lines = [
            "adopting a database written by the earlier implementation (no migration history)",
            "kept: " + ", ".join(f"{count} {table}" for table, count in self.copied.items()),
        ]
        if self.orphan_runs or self.orphan_progress:
            lines.append(
                f"rows whose parent is missing, kept aside: {self.orphan_runs} runs in "
                f"{PREFIX}orphan_runs, {self.orphan_progress} progress rows in "
                f"{PREFIX}orphan_progress"
            )
        if self.null_timestamps:
            lines.append(
                f"NULL timestamps set to 1970-01-01 00:00:00 UTC: {self.null_timestamps} "
                f"(listed in {PREFIX}null_timestamps)"
            )
        return lines


def _length(connection: Connection, column: str) -> str:
    return (
        f"CHAR_LENGTH({column})"
        if backend_family(connection.dialect) == "mysql"
        else f"LENGTH({column})"
    )


def _not_json_object(connection: Connection, column: str) -> str:
    dialect = backend_family(connection.dialect)
    if dialect == "postgresql":
        return f"json_typeof({column}::json) <> 'object'"
    if dialect == "mysql":
        return f"(JSON_VALID({column}) = 0 OR JSON_TYPE({column}) <> 'OBJECT')"
    return f"(json_valid({column}) = 0 OR json_type({column}) <> 'object')"


def legacy_problems(connection: Connection) -> list[str]:
    """Why this database cannot be adopted as it is (empty: it can). Reads only."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    missing = sorted(set(LEGACY_COLUMNS) - tables)
    if missing:
        return [
            f"it has some of the cosmos tables but not {', '.join(missing)}, and no migration "
            "history: it is not a database of the earlier implementation"
        ]
    problems = []
    for table, expected in LEGACY_COLUMNS.items():
        found = {column["name"] for column in inspector.get_columns(table)}
        if found != set(expected):
            extra = sorted(found - set(expected))
            lacking = sorted(set(expected) - found)
            problems.append(
                f"table {table} does not have the earlier implementation's columns "
                f"(unexpected: {extra or 'none'}; missing: {lacking or 'none'})"
            )
    if problems:
        return problems
    problems = []
    for description, query in _data_checks(connection):
        count = connection.execute(text(query)).scalar_one()
        if count:
            problems.append(f"{count} rows where {description}")
    return problems


def _data_checks(connection: Connection) -> list[tuple[str, str]]:
    """(what is wrong, a query counting the rows where it is) for each rule v0 did not enforce."""
    statuses = ", ".join(f"'{status}'" for status in STATUSES)
    checks: list[tuple[str, str]] = [
        (
            f"runs.status is not one of {', '.join(STATUSES)}",
            f"SELECT COUNT(*) FROM runs WHERE status NOT IN ({statuses})",
        ),
    ]
    for table, limits in LENGTH_LIMITS.items():
        for column, limit in limits.items():
            checks.append(
                (
                    f"{table}.{column} is longer than {limit} characters",
                    f"SELECT COUNT(*) FROM {table} WHERE {_length(connection, column)} > {limit}",
                )
            )
    for table, columns in JSON_COLUMNS.items():
        for column in columns:
            checks.append(
                (
                    f"{table}.{column} is not a JSON object",
                    f"SELECT COUNT(*) FROM {table} WHERE {_not_json_object(connection, column)}",
                )
            )
    if connection.dialect.name == "sqlite":
        for table, columns in ALL_TIMESTAMPS.items():
            for column in columns:
                globs = " AND ".join(f"{column} NOT GLOB '{glob}'" for glob in _SQLITE_TIME_GLOBS)
                checks.append(
                    (
                        f"{table}.{column} is not a 'YYYY-MM-DD HH:MM:SS[.ffffff]' timestamp",
                        f"SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL AND {globs}",
                    )
                )
    return checks


def check_legacy_sqlite(path: Path) -> None:
    """Refuse (``MigrationError``) an earlier-implementation SQLite file that cannot be adopted.

    Opens the file read-only: a refused file is left byte-for-byte as it was.
    """
    engine = read_only_engine(path)
    try:
        with engine.connect() as connection:
            problems = legacy_problems(connection)
    finally:
        engine.dispose()
    if problems:
        raise _refusal(problems)


def _refusal(problems: list[str]) -> MigrationError:
    return MigrationError(
        "cannot adopt this database (no migration history, and not the earlier "
        "implementation's schema as expected): " + "; ".join(problems) + ". Nothing was changed."
    )


def _count(connection: Connection, query: str) -> int:
    return int(connection.execute(text(query)).scalar_one())


def adopt(connection: Connection, config: Config) -> AdoptionReport:
    """Adopt an earlier-implementation database inside the caller's transaction.

    Leaves the schema at revision 0001 with every row kept (see the module docstring). Raises
    ``MigrationError`` before changing anything if the database is not adoptable.
    """
    problems = legacy_problems(connection)
    if problems:
        raise _refusal(problems)
    report = AdoptionReport()
    dialect = connection.dialect.name
    for table in LEGACY_COLUMNS:
        connection.execute(text(f"ALTER TABLE {table} RENAME TO {PREFIX}{table}"))
    if dialect == "postgresql":
        # v0 times are UTC; should a column be naive (TIMESTAMP WITHOUT TIME ZONE), reading it
        # as UTC rather than in the server's zone keeps the instant.
        connection.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        # The v0 SERIAL's sequence keeps its name through the rename and would collide.
        connection.execute(
            text(f"ALTER SEQUENCE IF EXISTS progress_id_seq RENAME TO {PREFIX}progress_id_seq")
        )
    command.upgrade(config, "0001")
    if dialect == "sqlite":
        _pad_sqlite_times(connection)

    report.null_timestamps = _record_null_timestamps(connection)
    report.orphan_runs = _set_aside(
        connection,
        "runs",
        f"prompt_id NOT IN (SELECT id FROM {PREFIX}prompts)",
    )
    report.orphan_progress = _set_aside(
        connection,
        "progress",
        f"run_id NOT IN (SELECT id FROM {PREFIX}runs WHERE prompt_id IN "
        f"(SELECT id FROM {PREFIX}prompts))",
    )
    for table in LEGACY_COLUMNS:
        report.copied[table] = _copy_kept_rows(connection, table)
    if dialect == "postgresql":
        connection.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('progress', 'id'), "
                "COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM progress"
            )
        )
    for table in ("progress", "runs", "prompts"):
        connection.execute(text(f"DROP TABLE {PREFIX}{table}"))
    return report


# Which v0 rows are kept in the new tables: those whose parents are kept.
_KEPT = {
    "prompts": "",
    "runs": f" WHERE prompt_id IN (SELECT id FROM {PREFIX}prompts)",
    "progress": " WHERE run_id IN (SELECT id FROM runs)",
}


def _copy_kept_rows(connection: Connection, table: str) -> int:
    """Copy one table's kept v0 rows into the new table; NULL required times become EPOCH."""
    columns = LEGACY_COLUMNS[table]
    selected = []
    for column in columns:
        value = _quote(connection, column)
        if column in REQUIRED_TIMESTAMPS.get(table, ()):
            value = f"COALESCE({value}, :epoch)"
        elif connection.dialect.name == "postgresql" and column in JSON_COLUMNS.get(table, ()):
            value = f"{value}::jsonb"
        selected.append(value)
    quoted = ", ".join(_quote(connection, column) for column in columns)
    sql = f"INSERT INTO {table} ({quoted}) SELECT {', '.join(selected)} FROM {PREFIX}{table}"
    statement = text(sql + _KEPT[table])
    if ":epoch" in sql:
        statement = statement.bindparams(bindparam("epoch", EPOCH, type_=UTCDateTime()))
    return int(connection.execute(statement).rowcount)


def _pad_sqlite_times(connection: Connection) -> None:
    # v0 text without microseconds ('2025-01-04 12:00:00') is given its '.000000': the package
    # writes six digits always, and SQLite compares this column as text (keyset pagination
    # needs equal instants to be equal text).
    for table, columns in ALL_TIMESTAMPS.items():
        for column in columns:
            name = _quote(connection, column)
            connection.execute(
                text(
                    f"UPDATE {PREFIX}{table} SET {name} = {name} || '.000000' "
                    f"WHERE length({name}) = 19"
                )
            )


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _set_aside(connection: Connection, table: str, orphan_condition: str) -> int:
    count = _count(connection, f"SELECT COUNT(*) FROM {PREFIX}{table} WHERE {orphan_condition}")
    if count:
        connection.execute(
            text(
                f"CREATE TABLE {PREFIX}orphan_{table} AS "
                f"SELECT * FROM {PREFIX}{table} WHERE {orphan_condition}"
            )
        )
    return count


def _record_null_timestamps(connection: Connection) -> int:
    as_text = "CHAR(255)" if backend_family(connection.dialect) == "mysql" else "VARCHAR(255)"
    selects = [
        f"SELECT '{table}', CAST(id AS {as_text}), "
        f"'{column}' FROM {PREFIX}{table} WHERE {_quote(connection, column)} IS NULL"
        for table, columns in REQUIRED_TIMESTAMPS.items()
        for column in columns
    ]
    union = " UNION ALL ".join(selects)
    count = _count(connection, f"SELECT COUNT(*) FROM ({union}) AS nulls")
    if count:
        connection.execute(
            text(
                f"CREATE TABLE {PREFIX}null_timestamps (table_name VARCHAR(20) NOT NULL, "
                "row_id VARCHAR(255) NOT NULL, column_name VARCHAR(20) NOT NULL)"
            )
        )
        connection.execute(
            text(f"INSERT INTO {PREFIX}null_timestamps (table_name, row_id, column_name) {union}")
        )
    return count
