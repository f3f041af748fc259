"""``cosmos-models db …``: upgrade, downgrade (asking --yes), current, history, check, backup."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cosmos_models.cli.app import (
    NOT_MIGRATED,
    DatabaseOption,
    db_app,
    describe,
    literal,
    opened,
    out,
)
from cosmos_models.db import migrate
from cosmos_models.db.migrator import UpgradeResult
from cosmos_models.db.revisions import head_revision, scripts
from cosmos_models.db.safety import copy_sqlite
from cosmos_models.errors import CosmosModelsError

# -- db -------------------------------------------------------------------------------------


def _migration(
    action: Callable[..., UpgradeResult], database: str | None, revision: str, backup: bool
) -> None:
    out.print(f"database: {describe(database)}")
    action(database, revision, backup=backup, report=out.print)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Do not back up a SQLite file first.")
    ] = False,
    database: DatabaseOption = None,
) -> None:
    """Upgrade the schema (default: to head); adopts databases of the earlier implementation."""
    _migration(migrate.upgrade, database, revision, not no_backup)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[
        str,
        typer.Argument(help="Target revision: an id, base, or -N (write: db downgrade -- -2)."),
    ] = "-1",
    no_backup: Annotated[
        bool, typer.Option("--no-backup", help="Do not back up a SQLite file first.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Drop tables and columns that hold data.")
    ] = False,
    database: DatabaseOption = None,
) -> None:
    """Downgrade the schema to REVISION (default: one revision down).

    Dropping tables or columns that hold data needs --yes, unless a SQLite backup is taken.
    """
    refusal = None if yes else migrate.downgrade_refusal(database, revision, backup=not no_backup)
    if refusal is not None:
        raise CosmosModelsError(f"{refusal}: rerun with --yes to drop them (or back up first)")
    _migration(migrate.downgrade, database, revision, not no_backup)


def _current(database: str | None) -> str:
    """The database's revision; raises ``CosmosModelsError`` (with the hint) when it has none."""
    revision = migrate.current_revision(database)
    if revision is None:
        raise CosmosModelsError(f"{NOT_MIGRATED} ({describe(database)} has no revision)")
    return revision


@db_app.command("current")
def db_current(database: DatabaseOption = None) -> None:
    """Print the revision the database is at (exit 1 if it has none: not migrated)."""
    revision = _current(database)
    suffix = " (head)" if revision == head_revision() else ""
    out.print(f"{revision}{suffix}")


@db_app.command("history")
def db_history(database: DatabaseOption = None) -> None:
    """List the revisions, oldest first, marking the database's current one."""
    current = _current(database)
    for revision in reversed(list(scripts().walk_revisions())):
        marker = " (current)" if revision.revision == current else ""
        out.print(f"{revision.revision}  {revision.doc}{marker}")


@db_app.command("check")
def db_check(database: DatabaseOption = None) -> None:
    """Exit 1 if the database schema differs from the models (an autogenerate diff)."""
    _current(database)
    differences = migrate.schema_differences(database)
    for difference in differences:
        out.print(literal(f"differs: {difference}"))
    if differences:
        raise typer.Exit(1)
    out.print("schema matches the models")


@db_app.command("backup")
def db_backup(
    path: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).")],
    database: DatabaseOption = None,
) -> None:
    """Write a consistent copy of a SQLite database file, even while it is in use."""
    with opened(database, read_only=True) as db:
        if not db.is_sqlite or db.is_memory:
            raise CosmosModelsError(
                "backup copies SQLite files; for PostgreSQL use pg_dump, for MariaDB mariadb-dump"
            )
        source = Path(db.url.database or "")
    if not source.exists():
        raise CosmosModelsError(f"database file {source} does not exist")
    out.print(literal(f"backup written: {copy_sqlite(source, path)}"))
