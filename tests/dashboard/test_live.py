"""``/stats`` and ``/events`` over real HTTP on every backend: what the dashboard is pushed."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from cosmos_models import (
    DatabaseConnection,
    RunStatus,
    create_run,
    record_progress,
    transition,
)
from cosmos_models.api.dashboard import mount_dashboard
from cosmos_models.cli import main
from cosmos_models.db.migrate import upgrade
from cosmos_models.db.tables import RUNS
from tests.api_server import serving
from tests.dashboard.conftest import make_app
from tests.dashboard.data import add_prompt


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, parsed data) of each message of an open Server-Sent-Events response."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


def next_event(events: Iterator[tuple[str, Any]], wanted: str, seconds: float = 5) -> Any:
    deadline = time.monotonic() + seconds
    for event, data in events:
        if event == wanted:
            return data
        assert time.monotonic() < deadline, f"no {wanted} event within {seconds}s"
    raise AssertionError("stream ended")


def test_stats_counts_runs_and_recent_events(db: DatabaseConnection, server: str) -> None:
    run_id = create_run(db, {"prompt_id": add_prompt(db)}).id
    transition(db, run_id, RunStatus.RUNNING)
    record_progress(db, run_id, "inference", 10.0)
    body = httpx.get(f"{server}/stats").json()
    assert body["runs_by_status"]["running"] == 1
    assert body["runs_by_status"]["completed"] == 0
    assert body["events_last_minute"] == 1
    assert body["at"].endswith("+00:00")


def test_events_stream_a_snapshot_then_what_moves(db: DatabaseConnection, server: str) -> None:
    prompt_id = add_prompt(db)
    running = create_run(db, {"prompt_id": prompt_id}).id
    transition(db, running, RunStatus.RUNNING)
    done = create_run(db, {"prompt_id": prompt_id}).id
    transition(db, done, RunStatus.CANCELLED)
    with httpx.stream("GET", f"{server}/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        snapshot = next_event(events, "snapshot")
        assert [state["id"] for state in snapshot] == [running]
        record_progress(db, running, "inference", 55.0, "step 19/35")
        (moved,) = next_event(events, "runs")
        assert (moved["latest_percentage"], moved["latest_message"]) == (55.0, "step 19/35")
        transition(db, running, RunStatus.COMPLETED)
        (final,) = next_event(events, "runs")
        assert (final["id"], final["status"]) == (running, "completed")
        stats = next_event(events, "stats")
        assert stats["runs_by_status"]["completed"] == 1


def test_deleted_runs_and_two_clients(db: DatabaseConnection, server: str) -> None:
    prompt_id = add_prompt(db)
    run_id = create_run(db, {"prompt_id": prompt_id}).id
    with (
        httpx.stream("GET", f"{server}/events", timeout=10) as first,
        httpx.stream("GET", f"{server}/events", timeout=10) as second,
    ):
        streams = [sse_events(first), sse_events(second)]
        for events in streams:
            assert [state["id"] for state in next_event(events, "snapshot")] == [run_id]
        with db.engine.begin() as connection:
            connection.execute(delete(RUNS).where(RUNS.c.id == run_id))
        for events in streams:
            assert next_event(events, "removed") == [run_id]


def test_mount_refuses_a_bad_interval() -> None:
    for interval in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="interval: must be a positive number"):
            mount_dashboard(FastAPI(), interval=interval)  # type: ignore[arg-type]


def test_page_and_its_files_are_served(db: DatabaseConnection) -> None:
    with serving(make_app(db, actions=True)) as url:
        page = httpx.get(f"{url}/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert "/dashboard/static/dashboard.js" in page.text
        for name in ("dashboard.js", "dashboard.css"):
            assert httpx.get(f"{url}/dashboard/static/{name}").status_code == 200
        assert httpx.get(f"{url}/dashboard/static/../dashboard.py").status_code == 404
        assert httpx.get(f"{url}/dashboard/settings").json() == {"actions": True}


@pytest.mark.parametrize(("flags", "actions"), [([], False), (["--allow-actions"], True)])
def test_serve_mounts_the_dashboard_read_only_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], actions: bool
) -> None:
    import uvicorn

    location = str(tmp_path / "s.db")
    upgrade(location, report=lambda _: None)  # serve checks the schema first
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(app=app, **options))
    with pytest.raises(SystemExit) as done:
        main(["serve", "--database", location, *flags])
    assert done.value.code == 0
    assert seen["app"].state.cosmos_dashboard.actions is actions
    assert seen["timeout_graceful_shutdown"] == 3  # open dashboards do not hold a stop forever


def test_dashboard_runs_refuses_a_bad_cursor_or_limit(server: str) -> None:
    for query in ("cursor=not-a-cursor", "limit=0", "status=exploded"):
        response = httpx.get(f"{server}/dashboard/runs?{query}")
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"
