"""cosmos-models prompts/runs/watch/demo, end to end on a database file and PostgreSQL."""

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import cosmos_models.cli.watch as cli_watch
from cosmos_models import (
    DatabaseConnection,
    ProgressRead,
    RunRead,
    RunStatus,
    create_prompt,
    create_run,
    record_progress,
    record_progress_batch,
    transition,
)
from cosmos_models.models.ids import new_run_id
from tests.factories import T0
from tests.test_cli import cli

PROMPT = {"model_type": "transfer", "prompt_text": "city at night", "inputs": {}, "parameters": {}}


def seeded(db: DatabaseConnection) -> tuple[str, str]:
    prompt = create_prompt(db, PROMPT)
    run = create_run(db, prompt.id)
    transition(db, run.id, RunStatus.RUNNING)
    record_progress(db, run.id, "inference", 40.0, "frame 48/120")
    return prompt.id, run.id


@pytest.fixture
def url(db: DatabaseConnection) -> str:
    return db.url.render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_lists_and_show(
    backend: str, db: DatabaseConnection, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt_id, run_id = seeded(db)
    code, out, _ = cli(capsys, "prompts", "list", "-d", url)
    assert code == 0
    assert prompt_id in out
    assert json.loads(cli(capsys, "prompts", "list", "--json", "-d", url)[1])[0]["id"] == prompt_id
    code, out, _ = cli(capsys, "runs", "list", "--status", "running", "-d", url)
    assert code == 0
    assert run_id in out
    assert "inference 40%" in out
    assert (
        json.loads(cli(capsys, "runs", "list", "--status", "completed", "--json", "-d", url)[1])
        == []
    )
    listed = json.loads(
        cli(capsys, "runs", "list", "--model-type", "transfer", "--json", "-d", url)[1]
    )
    assert [run["id"] for run in listed] == [run_id]
    assert listed[0]["created_at"].endswith("Z")
    code, out, _ = cli(capsys, "runs", "show", run_id, "-d", url)
    assert code == 0
    assert "status: running" in out
    assert "frame 48/120" in out
    shown = json.loads(cli(capsys, "runs", "show", run_id, "--json", "-d", url)[1])
    assert shown["prompt"]["id"] == prompt_id
    assert [event["percentage"] for event in shown["progress"]] == [40.0]


def test_show_unknown_run_and_bad_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "x.db")
    assert cli(capsys, "db", "upgrade", "-d", path)[0] == 0
    code, _, err = cli(capsys, "runs", "show", "rs_nope", "-d", path)
    assert code == 1
    assert "rs_nope" in err
    assert cli(capsys, "runs", "list", "--status", "bogus", "-d", path)[0] == 2


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_watch_follows_runs_until_final(
    backend: str, db: DatabaseConnection, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run_id = seeded(db)
    second = create_run(db, create_prompt(db, PROMPT).id).id
    watching = threading.Event()

    def worker() -> None:
        watching.wait(30)
        for percentage in (60.0, 80.0, 100.0):
            record_progress(db, run_id, "inference", percentage, f"at {percentage}")
        transition(db, run_id, RunStatus.COMPLETED)
        transition(db, second, RunStatus.CANCELLED)

    thread = threading.Thread(target=worker)
    thread.start()
    # The worker starts once watch has drawn its first frame: watch is then really following.
    code, out, _ = cli_with_hook(
        capsys, watching, "watch", run_id, second, "--interval", "0.05", "-d", url
    )
    thread.join()
    assert code == 0
    assert run_id in out
    assert "completed" in out
    assert "cancelled" in out


def cli_with_hook(
    capsys: pytest.CaptureFixture[str], started: threading.Event, *args: str
) -> tuple[int, str, str]:
    import cosmos_models.cli.watch as cli_watch

    original = cli_watch.latest_progress

    def spy(*a: object, **k: object) -> object:
        result = original(*a, **k)  # type: ignore[arg-type]
        started.set()
        return result

    cli_watch.latest_progress = spy  # type: ignore[assignment]
    try:
        return cli(capsys, *args)
    finally:
        cli_watch.latest_progress = original


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql", "mariadb"])
def test_watch_draws_every_event_as_it_commits(
    backend: str,
    db: DatabaseConnection,
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events written in a burst are each drawn (a fixed refresh showed only the last one)."""
    _, run_id = seeded(db)
    watching = threading.Event()
    drawn: list[float] = []
    original = cli_watch._draw

    def spy(bars: Any, tasks: Any, run: RunRead, event: ProgressRead | None) -> None:
        if event is not None:
            drawn.append(event.percentage)
        if event is not None and event.percentage == 100.0 and drawn.count(100.0) == 1:
            transition(db, run_id, RunStatus.COMPLETED)  # after the last event written below
        original(bars, tasks, run, event)

    monkeypatch.setattr(cli_watch, "_draw", spy)

    def worker() -> None:
        watching.wait(30)
        record_progress_batch(
            db,
            [{"run_id": run_id, "stage": "inference", "percentage": p} for p in (60, 80, 100)],
        )

    thread = threading.Thread(target=worker)
    thread.start()
    # The shortest --interval: statuses are re-read between events, which must skip none.
    code, out, err = cli_with_hook(
        capsys, watching, "watch", run_id, "--interval", "0.05", "-d", url
    )
    thread.join()
    assert code == 0, err
    # Each refresh draws the last event again; the events themselves come once, in order.
    changes = [p for i, p in enumerate(drawn) if i == 0 or p != drawn[i - 1]]
    assert changes == [40.0, 60.0, 80.0, 100.0]
    assert "completed" in out


def test_watch_fits_80_columns_with_whole_ids_and_visible_bars() -> None:
    console = Console(width=80, record=True, color_system=None)
    bars = cli_watch.watch_bars(console)
    tasks: dict[str, Any] = {}
    ids = [new_run_id() for _ in range(3)]
    for run_id, percentage in zip(ids, (0.0, 42.0, 100.0), strict=True):
        run = RunRead(
            id=run_id,
            prompt_id="ps_1",
            model_type="transfer",
            status=RunStatus.RUNNING,
            created_at=T0,
            updated_at=T0,
            started_at=T0,
            completed_at=None,
        )
        event = ProgressRead(
            id=1,
            seq=1,
            run_id=run_id,
            stage="a-very-long-stage-name",
            percentage=percentage,
            message="m" * 200,
            timestamp=T0,
        )
        cli_watch._draw(bars, tasks, run, event)
    console.print(bars)
    lines = console.export_text().splitlines()
    assert len(lines) == 3
    for run_id, line, percentage in zip(ids, lines, (0.0, 42.0, 100.0), strict=True):
        assert len(line) <= 80, line
        assert run_id in line  # whole, so that it can be copied
        width = line.count("━") + line.count("─")
        assert width >= 10, line  # the bar is there, empty or full
        assert line.count("━") == round(width * percentage / 100), line
    wide = Console(width=160, record=True, color_system=None)
    wide_bars = cli_watch.watch_bars(wide)
    assert len(wide_bars.columns) > len(bars.columns)  # elapsed time and message when room


def test_watch_with_nothing_active(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "quiet.db")
    cli(capsys, "db", "upgrade", "-d", path)
    code, out, _ = cli(capsys, "watch", "--once", "-d", path)
    assert code == 0
    assert "no active runs" in out
    code, _, err = cli(capsys, "watch", "rs_missing", "--once", "-d", path)
    assert code == 1
    assert "rs_missing" in err


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_demo_fills_and_finishes(
    backend: str, db: DatabaseConnection, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys, "demo", "--seconds", "1", "--runs-per-prompt", "1", "--workers", "2", "-d", url
    )
    assert code == 0
    assert "added 3 prompts and 3 pending runs" in out
    assert "done: " in out
    runs = json.loads(cli(capsys, "runs", "list", "--json", "-d", url)[1])
    assert {run["model_type"] for run in runs} == {"transfer", "reason", "predict"}
    assert all(RunStatus(run["status"]).is_final for run in runs)
