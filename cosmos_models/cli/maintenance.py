"""``cosmos-models stats``, ``prune`` and ``restore``: statistics and archiving of old data."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cosmos_models.cli.app import (
    DatabaseOption,
    JsonOption,
    app,
    describe,
    literal,
    opened,
    out,
    print_json,
    when,
)
from cosmos_models.models.status import FINAL_STATUSES
from cosmos_models.services.maintenance import parse_duration, parse_statuses, prune
from cosmos_models.services.restore import restore
from cosmos_models.services.stats import database_stats

# -- stats ----------------------------------------------------------------------------------


@app.command("stats")
def stats_command(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Rows per table, runs per status, database size, oldest and newest rows."""
    with opened(database, read_only=True) as db:
        stats = database_stats(db)
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
    with opened(database) as db:
        result = prune(
            db,
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
    if result.dropped_partitions:
        out.print(f"old events dropped by partition: {', '.join(result.dropped_partitions)}")
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
    with opened(database) as db:
        result = restore(db, archive)
    restored = ", ".join(f"{count:,} {table}" for table, count in result.restored.items())
    out.print(literal(f"restored {restored}; {result.already_present:,} rows were already present"))
    if result.renumbered:
        out.print(f"{result.renumbered:,} progress rows got new ids (their ids were taken)")
