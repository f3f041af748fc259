"""The ``cosmos-models`` command line: migrate, inspect, watch live progress, prune with an archive.

Exit codes: 0 success, 1 error, 2 usage error; every error is one line on stderr beginning
``error:`` (no traceback, no secret). Every command takes ``--database`` (default:
``COSMOS_DATABASE_URL``, then ``outputs/cosmos_workflow.db``); listings take ``--json``. Commands
that only read open the database read-only and never create a file. Stored text is printed
literally (never as Rich markup), with control characters shown as escapes (see ``visible``).
"""

import json
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import exc as sa_exc
from typer._click import exceptions as click_exceptions

from cosmos_models import migrate
from cosmos_models.connection import (
    DatabaseConnection,
    get_database_url,
    parse_location,
    redact_url,
)
from cosmos_models.errors import CosmosModelsError
from cosmos_models.maintenance import (
    FINAL_STATUSES,
    database_stats,
    parse_duration,
    parse_statuses,
    prune,
    restore,
)

app = typer.Typer(
    name="cosmos-models",
    help="Inspect and maintain a cosmos_models database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations and backups.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# No highlighting and no ":emoji:" codes: what the database holds is shown as it is.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
NOT_MIGRATED = "not migrated: run cosmos-models db upgrade"

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        help="File path, :memory: or URL "
        "(default: COSMOS_DATABASE_URL, then outputs/cosmos_workflow.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def describe(database: str | None) -> str:
    """The database's location for humans: password and secret query parameters masked."""
    return visible(redact_url(parse_location(database or get_database_url())))


# C0 and C1 control characters, DEL, and the Unicode format characters that reorder or hide
# text (bidi embeddings, overrides and isolates, zero-width marks): a terminal acts on them.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


# What json.dumps leaves raw inside strings although a terminal acts on it (it escapes C0).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as text whose control characters are shown as ``\\xNN``/``\\uNNNN`` escapes.

    ESC, BEL, CR, LF, TAB, backspace, C1 controls and bidi overrides reach the terminal as
    visible escapes, never as actions.
    """
    return _INVISIBLE.sub(_escape, str(value))


def literal(value: object) -> Text:
    """Stored text for a Rich table or line: never read as markup, control characters visible."""
    return Text(visible(value))


@contextmanager
def opened(database: str | None, *, read_only: bool = False) -> Iterator[DatabaseConnection]:
    """A connection for one command, closed afterwards.

    ``read_only`` never creates a file and opens SQLite read-only. Driver errors raised inside
    become one-line ``DatabaseError``s (no secret).
    """
    connection = DatabaseConnection(database, read_only=read_only)
    try:
        yield connection
    except sa_exc.DBAPIError as exc:
        raise connection.translate_error(exc) from None
    finally:
        connection.close()


def print_json(value: Any) -> None:
    """Print ``value`` as JSON (datetimes as ISO-8601), control characters as ``\\u`` escapes."""
    text = json.dumps(value, default=_json_default, ensure_ascii=False, indent=2)
    # json escapes C0 controls itself; C1 and bidi characters are valid raw JSON but would
    # reach the terminal, so they are written as the equivalent \u escapes.
    out.print(Text(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def when(value: datetime | None) -> str:
    """A timestamp for tables: UTC, to the second."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


# -- db -------------------------------------------------------------------------------------


def _migration(
    action: Callable[..., migrate.UpgradeResult], database: str | None, revision: str, backup: bool
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
    suffix = " (head)" if revision == migrate.head_revision() else ""
    out.print(f"{revision}{suffix}")


@db_app.command("history")
def db_history(database: DatabaseOption = None) -> None:
    """List the revisions, oldest first, marking the database's current one."""
    current = _current(database)
    for revision in reversed(list(migrate.scripts().walk_revisions())):
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
    with opened(database, read_only=True) as connection:
        if not connection.is_sqlite or connection.is_memory:
            raise CosmosModelsError(
                "backup copies SQLite files; for PostgreSQL use pg_dump, for MariaDB mariadb-dump"
            )
        source = Path(connection.url.database or "")
    if not source.exists():
        raise CosmosModelsError(f"database file {source} does not exist")
    out.print(literal(f"backup written: {migrate.copy_sqlite(source, path)}"))


# -- stats ----------------------------------------------------------------------------------


@app.command("stats")
def stats_command(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Rows per table, runs per status, database size, oldest and newest rows."""
    with opened(database, read_only=True) as connection:
        stats = database_stats(connection)
    if as_json:
        print_json(
            {
                "rows": stats.rows,
                "runs_by_status": stats.runs_by_status,
                "size_bytes": stats.size_bytes,
                "oldest": stats.oldest,
                "newest": stats.newest,
            }
        )
        return
    table = Table(title=Text(describe(database)))
    for column in ("table", "rows", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for name, count in stats.rows.items():
        table.add_row(name, f"{count:,}", when(stats.oldest[name]), when(stats.newest[name]))
    out.print(table)
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in sorted(stats.runs_by_status.items())
    )
    out.print(f"runs by status: {statuses or 'none'}")
    if stats.size_bytes is not None:
        out.print(f"size: {stats.size_bytes / 2**20:.2f} MiB")


# -- prune / restore ------------------------------------------------------------------------


@app.command("prune")
def prune_command(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Prune final runs older than this: 30d, 12h, 2w, 3600s."),
    ] = None,
    progress_older_than: Annotated[
        str | None,
        typer.Option(
            "--progress-older-than",
            help="Delete events older than this from every run; runs and summaries are kept.",
        ),
    ] = None,
    status: Annotated[
        str, typer.Option("--status", help="Comma-separated final statuses to prune.")
    ] = ",".join(s.value for s in FINAL_STATUSES),
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="Write every deleted row to this .jsonl.gz first."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 500,
    database: DatabaseOption = None,
) -> None:
    """Delete final runs older than the cutoff with their progress, and/or old events, in batches.

    ``--older-than``, ``--progress-older-than`` or both. ``--archive`` creates the file (header
    first), appends to an archive of ours, or repairs the truncated tail a killed prune left; any
    other existing path is refused, untouched.
    """
    if older_than is None and progress_older_than is None:
        raise typer.BadParameter("give --older-than, --progress-older-than or both")
    try:
        age = None if older_than is None else parse_duration(older_than)
        events_age = None if progress_older_than is None else parse_duration(progress_older_than)
        statuses = parse_statuses(status.split(","))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with opened(database) as connection:
        result = prune(
            connection,
            older_than=age,
            progress_older_than=events_age,
            statuses=statuses,
            archive_path=archive,
            dry_run=dry_run,
            batch_size=batch_size,
        )
    kept = (
        f" and {result.expired_progress:,} old progress rows of kept runs"
        if progress_older_than is not None
        else ""
    )
    if dry_run:
        out.print(
            f"would delete {result.runs:,} runs and {result.progress:,} progress rows{kept} "
            "(dry run)"
        )
        return
    out.print(
        f"deleted {result.runs:,} runs and {result.progress:,} progress rows{kept} "
        f"in {result.batches} batches"
    )
    if archive is not None:
        out.print(literal(f"archived {result.archived:,} rows to {archive}"))


@app.command("restore")
def restore_command(
    archive: Annotated[Path, typer.Argument(help="An archive written by prune --archive.")],
    database: DatabaseOption = None,
) -> None:
    """Put the rows of a prune archive back; rows already present are left alone.

    Anything but a complete archive of ours (a database, a text file, a device, a damaged or
    truncated archive, an invalid row) is refused with one line, the file untouched, nothing
    written to the database.
    """
    with opened(database) as connection:
        result = restore(connection, archive)
    restored = ", ".join(f"{count:,} {table}" for table, count in result.restored.items())
    out.print(literal(f"restored {restored}; {result.already_present:,} rows were already present"))
    if result.renumbered:
        out.print(f"{result.renumbered:,} progress rows got new ids (their ids were taken)")


# -- entry point ----------------------------------------------------------------------------


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    err.print(Text(f"error: {visible(' '.join(message.split()))}"))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exits 0 (ok), 1 (error) or 2 (usage), errors in one line."""
    try:
        # Not standalone: usage errors come back here, to be printed as one line (Typer's own
        # report is a multi-line box).
        code = app(args=argv, prog_name="cosmos-models", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()  # the help text is what was asked for
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "cosmos-models"
        fail(f"{exc.format_message()} (see: {command} --help)", exc.exit_code)
    except typer.Abort:
        fail("aborted", 1)
    except (CosmosModelsError, ValueError, RuntimeError, OSError) as exc:
        fail(str(exc) or type(exc).__name__, 1)
    except (sa_exc.SQLAlchemyError, sqlite3.Error) as exc:
        # Should not happen (every way in translates driver errors); still one line, and the
        # location is not part of these messages.
        fail(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}", 1)
    sys.exit(code if isinstance(code, int) else 0)


# The prompts/runs/watch/demo commands live beside these; importing them registers them on `app`.
from cosmos_models import cli_runs  # noqa: E402, F401
