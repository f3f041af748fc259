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

import fcntl
import functools
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy import exc as sa_exc

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.locations import get_database_url, parse_location
from cosmos_models.db.sqlite_files import open_sqlite_read_only
from cosmos_models.db.translate import sqlite_error
from cosmos_models.errors import MigrationError
from cosmos_models.models.types import JSONDocument, backend_family, metadata, utcnow

# An arbitrary constant: the key of PostgreSQL's advisory lock and MariaDB's named lock.
_LOCK_KEY = 7_316_952_804_113
_MYSQL_LOCK_NAME = "cosmos_models_migrate"
_MYSQL_LOCK_TIMEOUT_S = 600
_TABLES = frozenset({"prompts", "runs", "progress"})
# The package's own version table, not Alembic's default "alembic_version": an app that keeps
# these tables in its database usually runs Alembic for its own tables too, and the two
# histories must not collide (each would take the other's revision for an unknown one).
VERSION_TABLE = "cosmos_models_version"
# The binary NO PAD collations migration 0004 gives text columns (MariaDB; MySQL 8).
_EXACT_COLLATIONS = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})


def _revision(connection: Connection) -> str | None:
    """The revision recorded in ``VERSION_TABLE`` (``None``: none recorded)."""
    options = {"version_table": VERSION_TABLE}
    return MigrationContext.configure(connection, opts=options).get_current_revision()


Report = Callable[[str], None]


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, else the checkout."""
    packaged = Path(str(files("cosmos_models"))) / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the package's scripts, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def scripts() -> ScriptDirectory:
    """The shipped revisions, read once per process (they do not change while it runs)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this version of the package knows."""
    head = scripts().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise MigrationError("no migration scripts found")
    return head


def known_revisions() -> set[str]:
    """Every revision id shipped with this version of the package."""
    return {rev.revision for rev in scripts().walk_revisions()}


@dataclass
class UpgradeResult:
    """What ``upgrade`` or ``downgrade`` did."""

    before: str | None
    after: str | None
    backup_path: Path | None = None
    adoption: Any = None
    messages: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True if the schema changed."""
        return self.before != self.after or self.adoption is not None


@dataclass
class DatabaseState:
    """What a database holds before a migration: revision, tables, earlier-implementation shape."""

    revision: str | None
    tables: set[str]

    @property
    def is_legacy(self) -> bool:
        """True for a database with cosmos tables but no migration history."""
        return self.revision is None and bool(self.tables & _TABLES)


def _state(connection: Connection) -> DatabaseState:
    tables = set(inspect(connection).get_table_names())
    revision = _revision(connection)
    return DatabaseState(revision=revision, tables=tables)


def _check_known(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise MigrationError(
            f"the database is at revision {revision!r}, which this version of cosmos_models "
            f"does not know (its newest is {head_revision()!r}); it may have been migrated by a "
            "newer version: upgrade cosmos_models instead. Nothing was changed."
        )


@contextmanager
def _opened(
    url: Any, *, migrating: bool = False, read_only: bool = False
) -> Iterator[DatabaseConnection]:
    """The caller's ``DatabaseConnection``, or one opened (and closed) for ``url``.

    A migration of a SQLite file gets its own connection that leaves the journal mode alone;
    ``read_only`` opens SQLite read-only and never creates a file.
    """
    given = url if isinstance(url, DatabaseConnection) else None
    if given is not None and not (migrating and _sqlite_file(given) is not None):
        yield given
        return
    location = given.url if given is not None else url
    db = DatabaseConnection(location, sqlite_wal=not migrating, read_only=read_only)
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
        return _revision(connection)


# -- locks and SQLite safety --------------------------------------------------------------------


def _sqlite_file(db: DatabaseConnection) -> Path | None:
    # Every SQLite file location (plain path, sqlite: URL, file: URI) was resolved to a checked
    # absolute path by parse_location, so each is locked and backed up alike.
    return db.path


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the database file (it does not change the file)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _server_lock(connection: Connection) -> None:
    """Take the migration lock of a server backend for the current transaction/connection."""
    name = backend_family(connection.dialect)
    if name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    elif name == "mysql":
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": _MYSQL_LOCK_NAME, "timeout": _MYSQL_LOCK_TIMEOUT_S},
        ).scalar()
        if got != 1:
            raise MigrationError("another migration holds the lock; try again when it finishes")


def _server_unlock(connection: Connection) -> None:
    if backend_family(connection.dialect) == "mysql":
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MYSQL_LOCK_NAME})


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None
    # PRAGMA foreign_keys is a no-op inside a transaction: it must run before BEGIN.
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise MigrationError(
            f"the migration would leave {len(broken)} rows whose parent is missing "
            f"(tables: {', '.join(tables)}); nothing was changed"
        )


def read_sqlite_state(path: Path) -> DatabaseState | None:
    """Read a SQLite file's revision and tables without changing a byte of it."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    connection = open_sqlite_read_only(path.resolve())
    try:
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        revision = None
        if VERSION_TABLE in tables:
            row = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
            revision = row[0] if row else None
        return DatabaseState(revision=revision, tables=tables - {VERSION_TABLE})
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    finally:
        connection.close()


def backup_sqlite(path: Path, label: str) -> Path:
    """Copy a SQLite file with the online backup API to ``<name>.backup-<label>-<time>.db``."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.stem}.backup-{label}-{stamp}{path.suffix or '.db'}")
    return copy_sqlite(path, target)


def copy_sqlite(path: Path, target: Path) -> Path:
    """A consistent copy of a SQLite file, even while others write to it (online backup API).

    Raises ``FileExistsError`` rather than overwrite ``target``.
    """
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = open_sqlite_read_only(path.resolve())
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
        finally:
            destination.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)  # a half-written copy is worse than none
        raise sqlite_error(exc, path) from None
    finally:
        source.close()
    return target


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
    say = report or (lambda _message: None)
    _check_target(revision)
    with _opened(url, migrating=True) as db:
        if db.read_only:
            raise MigrationError(
                f"read-only: {db.path} is opened read-only (mode=ro or a read-only file "
                f"system); a migration writes, so the {direction} was not attempted"
            )
        try:
            path = _sqlite_file(db)
            with _file_lock(path):
                backup_path = None
                if path is not None:
                    backup_path = _prepare_sqlite_file(path, revision, direction, backup=backup)
                    if backup_path is not None:
                        say(f"backup: {backup_path}")
                result = _run(db, revision, direction, say)
                result.backup_path = backup_path
                return result
        except sa_exc.DBAPIError as exc:
            error = db.translate_error(exc)
            raise MigrationError(f"{direction} to {revision!r} failed: {error}") from None


def _check_target(revision: str) -> None:
    """Refuse an unknown target before anything (a lock file, a backup) is touched."""
    # Relative targets (-1, head-1, 0001+1) are resolved, and refused if bad, by Alembic.
    if revision in ("head", "heads", "base") or re.search(r"[+-]\d+$", revision):
        return
    try:
        script = scripts().get_revision(revision)
    except (CommandError, RevisionError):
        script = None
    if script is None:
        raise MigrationError(
            f"revision {revision!r} is not known (see: cosmos-models db history); "
            "nothing was changed"
        )


def _target_revision(revision: str, direction: str) -> str | None:
    if direction == "upgrade" and revision == "head":
        return head_revision()
    return None  # relative or explicit targets are resolved by Alembic


def _prepare_sqlite_file(path: Path, revision: str, direction: str, *, backup: bool) -> Path | None:
    """Refuse what must not be touched, and back up what is about to change, before opening."""
    from cosmos_models.db.legacy import check_legacy_sqlite

    state = read_sqlite_state(path)
    if state is None:
        return None
    _check_known(state.revision)
    if state.is_legacy:
        check_legacy_sqlite(path)
    elif not (state.tables & _TABLES) and state.revision is None:
        return None  # nothing of ours yet: there is nothing to lose
    if state.revision == _target_revision(revision, direction):
        return None
    if not backup:
        return None
    return backup_sqlite(path, state.revision or "legacy")


def _run(db: DatabaseConnection, revision: str, direction: str, say: Report) -> UpgradeResult:
    with db.engine.connect() as plain:
        connection = plain.execution_options(cosmos_writer=True)
        with _sqlite_foreign_keys_off(connection):
            try:
                with connection.begin():
                    _server_lock(connection)
                    try:
                        result = _apply(connection, revision, direction, say)
                    except (MigrationError, sa_exc.DBAPIError):
                        raise
                    except Exception as exc:
                        raise MigrationError(f"{direction} to {revision!r} failed: {exc}") from exc
            finally:
                _server_unlock(connection)
    changed = result.after != result.before
    say(f"revision after: {result.after or '(none)'}" + ("" if changed else " (no change)"))
    return result


def _apply(connection: Connection, revision: str, direction: str, say: Report) -> UpgradeResult:
    """Check, adopt if needed, and migrate, inside the caller's locked transaction."""
    from cosmos_models.db.legacy import adopt

    state = _state(connection)
    _check_known(state.revision)
    say(f"revision before: {state.revision or '(none)'}")
    adoption = None
    config = alembic_config(connection)
    if direction == "upgrade" and state.is_legacy:
        adoption = adopt(connection, config)
        for line in adoption.summary_lines():
            say(line)
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)
    _check_foreign_keys(connection)
    after = _revision(connection)
    return UpgradeResult(before=state.revision, after=after, adoption=adoption)


# -- what a downgrade loses ----------------------------------------------------------------------


# What each revision's downgrade drops: whole tables (None) or columns. A test checks that every
# shipped revision is listed here, so a new revision cannot forget to say what it takes away.
def downgrade_drops(revision: str) -> dict[str, tuple[str, ...] | None]:
    """What the downgrade of ``revision`` drops that may hold data, as its script declares it.

    Each revision script says it in ``DOWNGRADE_DROPS`` (table -> ``None`` for the whole table,
    else the columns), next to the ``downgrade()`` it describes.
    """
    script = scripts().get_revision(revision)
    if script is None:  # pragma: no cover - only shipped revisions are asked about
        raise MigrationError(f"unknown revision {revision!r}")
    drops: dict[str, tuple[str, ...] | None] = script.module.DOWNGRADE_DROPS
    return drops


def _undone(current: str | None, target: str) -> list[str]:
    """The revisions a downgrade from ``current`` to ``target`` undoes, newest first."""
    chain = [script.revision for script in reversed(list(scripts().walk_revisions()))]
    at = chain.index(current) if current in chain else -1
    if target == "base":
        goal = -1
    elif target.startswith("-") and target[1:].isdigit():
        goal = at - int(target[1:])
    else:
        try:
            script = scripts().get_revision(target)
        except (CommandError, RevisionError):
            return []  # Alembic itself reports an unknown target when asked to go there
        goal = chain.index(script.revision) if script is not None else -1
    return list(reversed(chain[max(goal, -1) + 1 : at + 1]))


def downgrade_losses(url: Any, revision: str) -> list[str]:
    """What a downgrade to ``revision`` would drop that holds data, e.g. ``"table runs (3 rows)"``.

    Empty when nothing with data would go. Opens read-only; raises ``DatabaseError``.
    """
    losses: list[str] = []
    with _opened(url, read_only=True) as db, db.connect(read_only=True) as connection:
        tables = set(inspect(connection).get_table_names())
        undone = [downgrade_drops(step) for step in _undone(_revision(connection), revision)]
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
    revision = _revision(connection)
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
