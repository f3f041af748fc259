"""Applying migrations to an open database: lock, back up, adopt, run Alembic, check.

It takes a ``DatabaseConnection`` it is given (never imports the class, so the connection can
call it for ``create_tables``); ``cosmos_models.db.migrate`` is the public entry that also takes
locations.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from cosmos_models.db.legacy import adopt, check_legacy_sqlite
from cosmos_models.db.revisions import (
    OUR_TABLES,
    Report,
    alembic_config,
    check_known,
    check_target,
    database_state,
    recorded_revision,
    target_revision,
)
from cosmos_models.db.safety import (
    backup_sqlite,
    check_foreign_keys,
    file_lock,
    read_sqlite_state,
    server_lock,
    server_unlock,
    sqlite_file_of,
    sqlite_foreign_keys_off,
)
from cosmos_models.errors import MigrationError

if TYPE_CHECKING:
    from cosmos_models.db.connection import DatabaseConnection


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


def prepare_sqlite_file(path: Path, revision: str, direction: str, *, backup: bool) -> Path | None:
    """Refuse what must not be touched, and back up what is about to change, before opening."""

    state = read_sqlite_state(path)
    if state is None:
        return None
    check_known(state.revision)
    if state.is_legacy:
        check_legacy_sqlite(path)
    elif not (state.tables & OUR_TABLES) and state.revision is None:
        return None  # nothing of ours yet: there is nothing to lose
    if state.revision == target_revision(revision, direction):
        return None
    if not backup:
        return None
    return backup_sqlite(path, state.revision or "legacy")


def _run(db: "DatabaseConnection", revision: str, direction: str, say: Report) -> UpgradeResult:
    with db.engine.connect() as plain:
        connection = plain.execution_options(cosmos_writer=True)
        with sqlite_foreign_keys_off(connection):
            try:
                with connection.begin():
                    server_lock(connection)
                    try:
                        result = _apply(connection, revision, direction, say)
                    except (MigrationError, sa_exc.DBAPIError):
                        raise
                    except Exception as exc:
                        raise MigrationError(f"{direction} to {revision!r} failed: {exc}") from exc
            finally:
                server_unlock(connection)
    changed = result.after != result.before
    say(f"revision after: {result.after or '(none)'}" + ("" if changed else " (no change)"))
    return result


def _apply(connection: Connection, revision: str, direction: str, say: Report) -> UpgradeResult:
    """Check, adopt if needed, and migrate, inside the caller's locked transaction."""

    state = database_state(connection)
    check_known(state.revision)
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
    check_foreign_keys(connection)
    after = recorded_revision(connection)
    return UpgradeResult(before=state.revision, after=after, adoption=adoption)


def migrate_database(
    db: "DatabaseConnection",
    revision: str,
    *,
    backup: bool = True,
    report: Report | None = None,
    direction: str = "upgrade",
) -> UpgradeResult:
    """Upgrade or downgrade the open database ``db`` to ``revision``; see ``migrate.upgrade``.

    A SQLite file is migrated through a connection of its own that leaves the journal mode
    alone (so that a refused or failed migration does not change a byte). Raises
    ``MigrationError`` (the database unchanged).
    """
    check_target(revision)
    if sqlite_file_of(db) is not None and db.sqlite_wal:
        sibling = type(db)(db.url, sqlite_wal=False, read_only=db.read_only)
        try:
            return migrate_database(
                sibling, revision, backup=backup, report=report, direction=direction
            )
        finally:
            sibling.close()
    say = report or (lambda _message: None)
    if db.read_only:
        raise MigrationError(
            f"read-only: {db.path} is opened read-only (mode=ro or a read-only file "
            f"system); a migration writes, so the {direction} was not attempted"
        )
    try:
        path = sqlite_file_of(db)
        with file_lock(path):
            backup_path = None
            if path is not None:
                backup_path = prepare_sqlite_file(path, revision, direction, backup=backup)
                if backup_path is not None:
                    say(f"backup: {backup_path}")
            result = _run(db, revision, direction, say)
            result.backup_path = backup_path
            return result
    except sa_exc.DBAPIError as exc:
        error = db.translate_error(exc)
        raise MigrationError(f"{direction} to {revision!r} failed: {error}") from None
