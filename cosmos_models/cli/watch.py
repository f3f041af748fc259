"""``cosmos-models watch``: live progress bars built on ``follow_progress``, 80 columns and up."""

import time
from contextlib import closing
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.progress import Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from cosmos_models.cli.app import (
    DatabaseOption,
    app,
    duration,
    opened,
    out,
    visible,
)
from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.models.progress import ProgressRead
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import UNFINISHED_STATUSES, RunStatus
from cosmos_models.services.follow import follow_progress
from cosmos_models.services.progress_queries import latest_progress
from cosmos_models.services.queries import get_run, list_runs

# -- watch ----------------------------------------------------------------------------------


def _watched(db: DatabaseConnection, given: list[str], seen: list[str]) -> list[RunRead]:
    """The runs asked for; without ids, every active run and every run seen active before."""
    if given:
        return [get_run(db, run_id) for run_id in given]
    unfinished = list_runs(db, status=UNFINISHED_STATUSES, limit=200).items
    active = {run.id: run for run in unfinished}
    seen.extend(sorted(run_id for run_id in active if run_id not in seen))
    # A run that finished since the last refresh is fetched once more, to show how it ended.
    return [active.get(run_id) or get_run(db, run_id) for run_id in seen]


class _Bar:
    """A bar that fills the width it is given and shows its empty part even without colours."""

    def __init__(self, percentage: float) -> None:
        self.percentage = percentage

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        done = min(width, round(width * self.percentage / 100))
        yield Text.assemble(("━" * done, "green"), ("─" * (width - done), "bright_black"))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(10, options.max_width)


class _BarColumn(ProgressColumn):
    def render(self, task: Task) -> _Bar:
        return _Bar(task.percentage)


# A run id is 32 characters; with status, stage and percentage an 80-column line keeps a bar
# of 15. Elapsed time and the message join on wider terminals.
WIDE_TERMINAL = 120


def watch_bars(console: Console) -> Progress:
    """The watch display for ``console``'s width: ids never cut, a bar always visible.

    ``markup=False`` everywhere: run ids, stages and messages are stored text, never Rich markup.
    """
    columns: list[ProgressColumn | str] = [
        TextColumn("{task.fields[run]}", markup=False, table_column=Column(no_wrap=True)),
        TextColumn(
            "{task.fields[status]}",
            markup=False,
            table_column=Column(no_wrap=True, min_width=11, max_width=11, overflow="ellipsis"),
        ),
        TextColumn(
            "{task.fields[stage]}",
            markup=False,
            table_column=Column(no_wrap=True, max_width=12, overflow="ellipsis"),
        ),
        _BarColumn(table_column=Column(ratio=1, min_width=10)),
        TextColumn("{task.percentage:>5.1f}%", markup=False, table_column=Column(no_wrap=True)),
    ]
    if console.width >= WIDE_TERMINAL:
        columns += [
            TextColumn(
                "{task.fields[elapsed]:>8}", markup=False, table_column=Column(no_wrap=True)
            ),
            TextColumn(
                "{task.fields[message]}",
                markup=False,
                table_column=Column(no_wrap=True, max_width=30, overflow="ellipsis"),
            ),
        ]
    return Progress(*columns, console=console, expand=True)


@app.command("watch")
def watch(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="Runs to watch (default: all active).")
    ] = None,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.05,
            help="Seconds between checks of run statuses; progress is drawn as it commits.",
        ),
    ] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Show one snapshot and exit.")] = False,
    database: DatabaseOption = None,
) -> None:
    """Live progress bars, one per run, until the runs are final (or Ctrl-C)."""
    given = list(run_ids or [])
    seen: list[str] = []
    bars = watch_bars(out)
    tasks: dict[str, TaskID] = {}
    with (
        opened(database, read_only=True) as db,
        Live(bars, console=out, refresh_per_second=8, transient=False) as live,
    ):
        try:
            # The last event drawn per run: the cursor the following resumes from, so that
            # every event is drawn once, in order, across status refreshes.
            shown: dict[str, ProgressRead] = {}
            while True:
                runs = {run.id: run for run in _watched(db, given, seen)}
                shown.update(latest_progress(db, [i for i in runs if i not in shown]))
                for run in runs.values():
                    _draw(bars, tasks, run, shown.get(run.id))
                if once or all(run.status.is_final for run in runs.values()):
                    break
                _follow_until_refresh(db, bars, tasks, runs, shown, interval, live)
        except KeyboardInterrupt:
            pass
    if not out.is_terminal:
        out.line()  # Live leaves the last frame without a newline when output is not a terminal
    if not tasks:
        out.print("no active runs")


def _follow_until_refresh(
    db: DatabaseConnection,
    bars: Progress,
    tasks: dict[str, TaskID],
    runs: dict[str, RunRead],
    shown: dict[str, ProgressRead],
    interval: float,
    live: Live,
) -> None:
    """Draw events of the active runs as they commit, for ``interval`` seconds at most."""
    active = [run_id for run_id, run in runs.items() if not run.status.is_final]
    after = {run_id: shown[run_id].seq if run_id in shown else 0 for run_id in active}
    refresh_at = time.monotonic() + interval
    with closing(follow_progress(db, active, after=after, idle_timeout=interval)) as events:
        for event in events:
            shown[event.run_id] = event
            _draw(bars, tasks, runs[event.run_id], event)
            live.refresh()
            if time.monotonic() >= refresh_at:
                return


def _draw(
    bars: Progress, tasks: dict[str, TaskID], run: RunRead, event: ProgressRead | None
) -> None:
    """Add or update the bar of one run (elapsed counts from when the run started)."""
    fields: dict[str, Any] = {
        "run": visible(run.id),
        "status": run.status.value,
        "stage": visible(event.stage) if event else "-",
        "message": visible(event.message) if event else "",
        "elapsed": duration(run.started_at, run.completed_at),
    }
    if run.id not in tasks:
        tasks[run.id] = bars.add_task(visible(run.id), total=100, **fields)
    done = 100.0 if run.status is RunStatus.COMPLETED else (event.percentage if event else 0.0)
    bars.update(tasks[run.id], completed=done, **fields)
