"""``cosmos-models db roles`` and ``db maintain``: least-privilege roles, progress partitions.

Both concern server databases only (PostgreSQL; MariaDB for roles): on SQLite ``roles`` is an
error and ``maintain`` has nothing to do, and neither opens, let alone creates, the file.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from cosmos_models.cli.app import DatabaseOption, db_app, describe, literal, opened, out
from cosmos_models.db.locations import get_database_url, parse_location
from cosmos_models.db.partitions import INTERVALS, maintain
from cosmos_models.db.roles import KINDS, create_roles, role_sql
from cosmos_models.errors import CosmosModelsError

PASSWORD_VARIABLES = {kind: f"COSMOS_ROLE_PASSWORD_{kind.upper()}" for kind in KINDS}
"""The environment variables that give the roles' passwords (unset: generated)."""


def _is_sqlite(database: str | None) -> bool:
    return parse_location(database or get_database_url()).get_backend_name() == "sqlite"


def _given_passwords() -> dict[str, str]:
    return {
        kind: os.environ[variable]
        for kind, variable in PASSWORD_VARIABLES.items()
        if os.environ.get(variable)
    }


@db_app.command("roles")
def db_roles(
    prefix: Annotated[
        str, typer.Option("--prefix", help="Roles are PREFIX_owner, PREFIX_app, PREFIX_reader.")
    ] = "cosmos",
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the statements instead of running them.")
    ] = False,
    with_passwords: Annotated[
        bool,
        typer.Option(
            "--with-passwords",
            help="With --sql: print the passwords given in COSMOS_ROLE_PASSWORD_* "
            "instead of placeholders.",
        ),
    ] = False,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="New file (mode 600) that receives the passwords generated for new roles.",
        ),
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Create (or with --sql print) the owner, app and reader roles and their grants.

    Passwords come from COSMOS_ROLE_PASSWORD_OWNER / _APP / _READER; a new role without one gets
    a generated password, written only to --password-file. Run as a superuser. PostgreSQL and
    MariaDB only.
    """
    if _is_sqlite(database):
        raise CosmosModelsError("roles exist on PostgreSQL and MariaDB; SQLite has none")
    given = _given_passwords()
    if sql:
        if with_passwords and len(given) < len(KINDS):
            missing = [PASSWORD_VARIABLES[k] for k in KINDS if k not in given]
            raise CosmosModelsError(f"--with-passwords needs {', '.join(missing)} set")
        with opened(database, read_only=True) as db:
            statements = role_sql(db, prefix=prefix, passwords=given if with_passwords else None)
        for statement in statements:
            out.print(literal(f"{statement};"))
        return
    if with_passwords:
        raise typer.BadParameter("--with-passwords goes with --sql")
    if len(given) < len(KINDS) and password_file is None:
        raise CosmosModelsError(
            "new roles without a password in COSMOS_ROLE_PASSWORD_* get a generated one: give "
            "--password-file FILE to receive it"
        )
    # Created new (never an existing file), readable by its owner only, before any role
    # exists: a generated password has somewhere to go, or no role is made.
    descriptor = (
        None
        if password_file is None
        else os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    )
    try:
        with opened(database) as db:
            result = create_roles(db, prefix=prefix, passwords=given)
    except BaseException:
        if descriptor is not None and password_file is not None:
            os.close(descriptor)
            password_file.unlink()
        raise
    out.print(f"database: {describe(database)}")
    out.print(f"created: {', '.join(result.created) or 'none (all existed)'}")
    if result.password_changed:
        out.print(f"password set: {', '.join(result.password_changed)}")
    if descriptor is not None:
        with os.fdopen(descriptor, "w") as handle:
            handle.writelines(
                f"{result.roles.name(kind)}={value}\n" for kind, value in result.generated.items()
            )
        out.print(literal(f"generated passwords ({len(result.generated)}) in {password_file}"))
    roles = result.roles
    out.print(
        f"migrate as {roles.owner}; applications connect as {roles.app}; "
        f"dashboards and replicas as {roles.reader}"
    )


@db_app.command("maintain")
def db_maintain(
    ahead: Annotated[
        int, typer.Option("--ahead", min=0, max=120, help="Intervals to create past the current.")
    ] = 3,
    interval: Annotated[
        str, typer.Option("--interval", help=f"Span of a new partition: {', '.join(INTERVALS)}.")
    ] = "month",
    database: DatabaseOption = None,
) -> None:
    """Create the progress partitions ahead of time (PostgreSQL); safe to run from cron.

    Idempotent and safe concurrently (an advisory lock). Run it as the owner role. Elsewhere
    (SQLite, MariaDB, an unpartitioned table) it does nothing.
    """
    if interval not in INTERVALS:
        raise typer.BadParameter(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    if _is_sqlite(database):
        out.print("progress is a plain table on SQLite: nothing to maintain")
        return
    with opened(database) as db:
        result = maintain(db, ahead=ahead, interval=interval)
    if not result.partitioned:
        out.print("progress is not partitioned here: nothing to maintain")
        return
    created = ", ".join(result.created) or "none (all present)"
    out.print(f"partitions created: {created}")
    if result.moved_rows:
        out.print(f"{result.moved_rows:,} rows moved from the default partition")
    if result.covered_until is not None:
        out.print(f"progress partitions reach {result.covered_until:%Y-%m-%d}")
