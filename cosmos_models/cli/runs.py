"""``cosmos-models prompts list`` and ``runs list|show``: listings and a run's details."""

from typing import Annotated

import typer
from rich.table import Table

from cosmos_models.cli.app import (
    DatabaseOption,
    JsonOption,
    app,
    describe,
    duration,
    literal,
    opened,
    out,
    print_json,
    when,
)
from cosmos_models.models.readmodels import RunDetail
from cosmos_models.models.status import RunStatus
from cosmos_models.services.progress_queries import latest_progress, progress_since
from cosmos_models.services.queries import get_run_detail, list_prompts, list_runs

prompts_app = typer.Typer(help="Prompts: what to run.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs: execution attempts and their progress.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")
app.add_typer(runs_app, name="runs")

LimitOption = Annotated[
    int, typer.Option("--limit", min=1, max=1000, help="How many rows at most.")
]
ModelTypeOption = Annotated[str | None, typer.Option("--model-type", help="Only this model type.")]


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
    with opened(database, read_only=True) as db:
        page = list_prompts(db, model_type=model_type, limit=limit)
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
    with opened(database, read_only=True) as db:
        page = list_runs(db, status=status or None, model_type=model_type, limit=limit)
        latest = latest_progress(db, [run.id for run in page.items])
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
            duration(run.started_at, run.completed_at),
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
    with opened(database, read_only=True) as db:
        detail = get_run_detail(db, run_id)
        timeline = []
        after = 0
        while page := progress_since(db, run_id, after, 500):
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
    took = duration(detail.started_at, detail.completed_at)
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
