"""``cosmos-models`` commands about prompts and runs: list, show, watch live, and a demo."""

import random
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.progress import Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

from cosmos_models.cli import (
    DatabaseOption,
    JsonOption,
    app,
    describe,
    literal,
    opened,
    out,
    print_json,
    visible,
    when,
)
from cosmos_models.connection import DatabaseConnection
from cosmos_models.errors import CosmosModelsError
from cosmos_models.follow import follow_progress
from cosmos_models.lifecycle import claim_next_run, create_prompt, create_run, heartbeat, transition
from cosmos_models.progress import ProgressRead
from cosmos_models.prompt import PromptCreate
from cosmos_models.queries import get_run, get_run_detail, list_prompts, list_runs
from cosmos_models.readmodels import RunDetail
from cosmos_models.run import RunRead, RunStatus
from cosmos_models.tracking import latest_progress, progress_since, record_progress
from cosmos_models.types import utcnow

prompts_app = typer.Typer(help="Prompts: what to run.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs: execution attempts and their progress.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(runs_app, name="runs")

LimitOption = Annotated[
    int, typer.Option("--limit", min=1, max=1000, help="How many rows at most.")
]
ModelTypeOption = Annotated[str | None, typer.Option("--model-type", help="Only this model type.")]


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    seconds = int(((end or utcnow()) - start).total_seconds())
    return str(timedelta(seconds=seconds))


def _listing(title: str, columns: tuple[str, ...]) -> Table:
    """A table for a listing; ids are never wrapped, so they can be copied whole."""
    table = Table(title=literal(title))
    for column in columns:
        table.add_column(column, no_wrap=column == "id")
    return table


@prompts_app.command("list")
def prompts_list(
    model_type: ModelTypeOption = None,
    limit: LimitOption = 20,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest prompts."""
    with opened(database, read_only=True) as connection:
        page = list_prompts(connection, model_type=model_type, limit=limit)
    if as_json:
        print_json([prompt.model_dump(mode="json") for prompt in page.items])
        return
    table = _listing(f"prompts in {describe(database)}", ("id", "model", "created", "prompt"))
    for prompt in page.items:
        text = (
            prompt.prompt_text if len(prompt.prompt_text) <= 50 else prompt.prompt_text[:49] + "…"
        )
        table.add_row(
            literal(prompt.id), literal(prompt.model_type), when(prompt.created_at), literal(text)
        )
    out.print(table)


@runs_app.command("list")
def runs_list(
    status: Annotated[
        list[RunStatus] | None,
        typer.Option("--status", help="Only runs in this status (repeatable)."),
    ] = None,
    model_type: ModelTypeOption = None,
    limit: LimitOption = 20,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """The newest runs, with their latest progress."""
    with opened(database, read_only=True) as connection:
        page = list_runs(connection, status=status or None, model_type=model_type, limit=limit)
        latest = latest_progress(connection, [run.id for run in page.items])
    if as_json:
        print_json([run.model_dump(mode="json") for run in page.items])
        return
    table = _listing(
        f"runs in {describe(database)}",
        ("id", "model", "status", "created", "duration", "progress"),
    )
    for run in page.items:
        event = latest.get(run.id)
        progress = "-" if event is None else f"{event.stage} {event.percentage:.0f}%"
        table.add_row(
            literal(run.id),
            literal(run.model_type),
            run.status.value,
            when(run.created_at),
            _duration(run.started_at, run.completed_at),
            literal(progress),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run: its prompt, timing, outputs and the whole progress timeline."""
    with opened(database, read_only=True) as connection:
        detail = get_run_detail(connection, run_id)
        timeline = []
        after = 0
        while page := progress_since(connection, run_id, after, 500):
            timeline.extend(page)
            after = page[-1].seq
    if as_json:
        payload = detail.model_dump(mode="json")
        payload["progress"] = [event.model_dump(mode="json") for event in timeline]
        print_json(payload)
        return
    _print_detail(detail)
    table = Table(title="progress")
    for column in ("time", "stage", "%", "message"):
        table.add_column(column, justify="right" if column == "%" else "left")
    for event in timeline:
        table.add_row(
            when(event.timestamp),
            literal(event.stage),
            f"{event.percentage:.1f}",
            literal(event.message),
        )
    out.print(table)


def _print_detail(detail: RunDetail) -> None:
    """The run's header lines; every stored value goes through ``literal`` (no markup)."""
    header = literal(detail.id)
    header.stylize("bold")
    header.append_text(literal(f"  {detail.model_type}  status: "))
    header.append(detail.status.value, style="bold")
    out.print(header)
    if detail.error_message:
        out.print(literal(f"error: {detail.error_message}"))
    out.print(literal(f"prompt: {detail.prompt.id}  {detail.prompt.prompt_text}"))
    took = _duration(detail.started_at, detail.completed_at)
    out.print(
        f"created {when(detail.created_at)}, started {when(detail.started_at)}, "
        f"completed {when(detail.completed_at)}, took {took}"
    )
    if detail.worker_id:
        out.print(
            literal(f"worker: {detail.worker_id}, last heartbeat {when(detail.heartbeat_at)}")
        )
    out.print(literal(f"execution config: {detail.execution_config}"))
    out.print(literal(f"outputs: {detail.outputs}"))


# -- watch ----------------------------------------------------------------------------------


def _watched(connection: DatabaseConnection, given: list[str], seen: list[str]) -> list[RunRead]:
    """The runs asked for; without ids, every active run and every run seen active before."""
    if given:
        return [get_run(connection, run_id) for run_id in given]
    active_statuses = [status for status in RunStatus if not status.is_final]
    active = {run.id: run for run in list_runs(connection, status=active_statuses, limit=200).items}
    seen.extend(sorted(run_id for run_id in active if run_id not in seen))
    # A run that finished since the last refresh is fetched once more, to show how it ended.
    return [active.get(run_id) or get_run(connection, run_id) for run_id in seen]


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
        opened(database, read_only=True) as connection,
        Live(bars, console=out, refresh_per_second=8, transient=False) as live,
    ):
        try:
            # The last event drawn per run: the cursor the following resumes from, so that
            # every event is drawn once, in order, across status refreshes.
            shown: dict[str, ProgressRead] = {}
            while True:
                runs = {run.id: run for run in _watched(connection, given, seen)}
                shown.update(latest_progress(connection, [i for i in runs if i not in shown]))
                for run in runs.values():
                    _draw(bars, tasks, run, shown.get(run.id))
                if once or all(run.status.is_final for run in runs.values()):
                    break
                _follow_until_refresh(connection, bars, tasks, runs, shown, interval, live)
        except KeyboardInterrupt:
            pass
    if not out.is_terminal:
        out.line()  # Live leaves the last frame without a newline when output is not a terminal
    if not tasks:
        out.print("no active runs")


def _follow_until_refresh(  # noqa: PLR0917 - the watch loop's state, passed once
    connection: DatabaseConnection,
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
    with closing(follow_progress(connection, active, after=after, idle_timeout=interval)) as events:
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
        "elapsed": _duration(run.started_at, run.completed_at),
    }
    if run.id not in tasks:
        tasks[run.id] = bars.add_task(visible(run.id), total=100, **fields)
    done = 100.0 if run.status is RunStatus.COMPLETED else (event.percentage if event else 0.0)
    bars.update(tasks[run.id], completed=done, **fields)


# -- demo -----------------------------------------------------------------------------------

DEMO_PROMPTS = [
    PromptCreate(
        model_type="transfer",
        prompt_text="cyberpunk city at night",
        inputs={"video": "/inputs/videos/city.mp4", "depth": "/inputs/depth/city_depth.mp4"},
        parameters={"num_steps": 35, "cfg_scale": 7.5},
    ),
    PromptCreate(
        model_type="reason",
        prompt_text="What happens next in this scene?",
        inputs={"video": "/outputs/result.mp4", "context": "urban environment"},
        parameters={"reasoning_depth": 3, "temperature": 0.7},
    ),
    PromptCreate(
        model_type="predict",
        prompt_text="Continue this animation",
        inputs={"frames": ["frame1.png", "frame2.png", "frame3.png"]},
        parameters={"prediction_length": 60, "fps": 30},
    ),
]
STAGES = (
    (RunStatus.UPLOADING, "uploading"),
    (RunStatus.RUNNING, "inference"),
    (RunStatus.DOWNLOADING, "downloading"),
)


def _demo_worker(
    connection: DatabaseConnection,
    worker_id: str,
    step_seconds: float,
    stop: threading.Event,
    seed: int,
) -> None:
    rng = random.Random(seed)  # noqa: S311 - simulated failures, not secrets
    while not stop.is_set():
        run = claim_next_run(connection, worker_id)
        if run is None:
            return
        for status, stage in STAGES:
            if run.status is not status:
                run = transition(connection, run.id, status)
            for percentage in (0.0, 25.0, 50.0, 75.0, 100.0):
                if stop.wait(step_seconds):
                    transition(
                        connection, run.id, RunStatus.CANCELLED, error_message="demo stopped"
                    )
                    return
                record_progress(connection, run.id, stage, percentage, f"{stage} {percentage:.0f}%")
                heartbeat(connection, run.id, worker_id)
            if stage == "inference" and rng.random() < 0.2:
                transition(
                    connection,
                    run.id,
                    RunStatus.FAILED,
                    error_message="simulated GPU out of memory",
                )
                break
        else:
            transition(connection, run.id, RunStatus.COMPLETED)


@app.command("demo")
def demo(
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="About how long the simulated workers run.")
    ] = 60.0,
    runs_per_prompt: Annotated[int, typer.Option("--runs-per-prompt", min=1, max=20)] = 2,
    workers: Annotated[int, typer.Option("--workers", min=1, max=8)] = 3,
    database: DatabaseOption = None,
) -> None:
    """Add sample prompts and runs for the three model types, then simulate workers on them."""
    with opened(database) as connection:
        connection.create_tables()
        run_count = 0
        for prompt in DEMO_PROMPTS:
            stored = create_prompt(connection, prompt)
            for _ in range(runs_per_prompt):
                create_run(
                    connection,
                    {"prompt_id": stored.id, "execution_config": {"gpu_node": "demo-gpu"}},
                )
                run_count += 1
        where = describe(database)
        out.print(
            literal(f"added {len(DEMO_PROMPTS)} prompts and {run_count} pending runs to {where}")
        )
        # Each run goes through 3 stages of 5 steps; spread the runs over the workers and time.
        rounds = -(-run_count // workers)
        step = max(seconds / (rounds * 15), 0.01)
        out.print(f"{workers} simulated workers for about {seconds:.0f}s; try: cosmos-models watch")
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_demo_worker,
                args=(connection, f"demo-worker-{i}", step, stop, i),
                daemon=True,
            )
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            stop.set()
            for thread in threads:
                thread.join()
        final = list_runs(connection, limit=run_count).items
        counts: dict[str, int] = {}
        for run in final:
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
        if not counts:
            raise CosmosModelsError("the demo runs disappeared")
        out.print(
            "done: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        )
