"""The live stream (SSE), health and the server's edges, over real HTTP on every backend."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cosmos_models import (
    DatabaseConnection,
    SchemaNotCurrentError,
    create_run,
    delete_run,
    record_progress,
    transition,
)
from cosmos_models.api import create_app
from cosmos_models.db.migrate import upgrade
from tests.api_server import TOKENS, serving
from tests.databases import URL_BACKENDS, fresh_url
from tests.factories import new_prompt


@pytest.fixture(params=URL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    with fresh_url(str(request.param), tmp_path) as url:
        upgrade(url, report=lambda _: None)
        yield url


def read_events(lines: Iterator[str], count: int | None = None) -> list[dict[str, Any]]:
    """Parse SSE messages until ``count`` of them (or the end event) arrived."""
    events: list[dict[str, Any]] = []
    message: dict[str, Any] = {}
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            field, _, value = line.partition(": ")
            message[field] = value
            continue
        if message:
            events.append(message)
            message = {}
        if events and (events[-1].get("event") == "end" or len(events) == count):
            break
    return events


def test_events_stream_live_and_resume_after_last_event_id(url: str) -> None:
    with (
        DatabaseConnection(url) as db,
        serving(create_app(url, tokens=TOKENS, keepalive=0.2)) as base,
    ):
        run_id = create_run(db, new_prompt(db)).id
        transition(db, run_id, "running")
        for percentage in (10.0, 20.0):
            record_progress(db, run_id, "render", percentage)
        with httpx.stream("GET", f"{base}/runs/{run_id}/events", timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            first = read_events(lines, 2)
            assert [(e["id"], e["event"]) for e in first] == [("1", "progress"), ("2", "progress")]
            assert json.loads(first[1]["data"])["percentage"] == 20.0
            record_progress(db, run_id, "render", 30.0)  # arrives live
            assert [e["id"] for e in read_events(lines, 1)] == ["3"]
        for percentage in (40.0, 50.0):  # while the client is away
            record_progress(db, run_id, "render", percentage)
        transition(db, run_id, "completed")
        headers = {"Last-Event-ID": "3"}
        with httpx.stream(
            "GET", f"{base}/runs/{run_id}/events", headers=headers, timeout=30
        ) as response:
            resumed = read_events(response.iter_lines())
        assert [e["id"] for e in resumed[:-1]] == ["4", "5"]  # no gap, no duplicate
        assert resumed[-1]["event"] == "end"
        assert json.loads(resumed[-1]["data"])["status"] == "completed"
        with httpx.stream(
            "GET", f"{base}/runs/{run_id}/events", headers={"Last-Event-ID": str(2**63 - 1)}
        ) as response:
            assert [e["event"] for e in read_events(response.iter_lines())] == ["end"]
        bad = httpx.get(f"{base}/runs/{run_id}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422
        assert httpx.get(f"{base}/runs/nope/events").status_code == 404


def test_a_stream_keeps_alive_then_ends_when_its_run_is_deleted(url: str) -> None:
    with (
        DatabaseConnection(url) as db,
        serving(create_app(url, tokens=TOKENS, keepalive=0.1)) as base,
    ):
        run_id = create_run(db, new_prompt(db)).id
        with httpx.stream("GET", f"{base}/runs/{run_id}/events", timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines) == ": keep-alive"  # idle: a comment, the stream stays open
            delete_run(db, run_id)
            rest = list(lines)  # the server closes the stream: nothing more will come
        assert [line for line in rest if line.startswith(("id:", "event:"))] == []


def test_health_is_503_until_migrated_and_startup_refuses_an_old_schema(
    backend_url_unmigrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(backend_url_unmigrated, require_current_schema=False)
    with serving(app) as base:
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503
        assert "cosmos-models db upgrade" in health.json()["detail"]
    with pytest.raises(RuntimeError), serving(create_app(backend_url_unmigrated)):
        pass  # the lifespan raised: the server does not start
    assert SchemaNotCurrentError.__name__ in caplog.text
    assert "run `cosmos-models db upgrade`" in caplog.text


@pytest.fixture(params=URL_BACKENDS)
def backend_url_unmigrated(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    with fresh_url(str(request.param), tmp_path) as url:
        yield url


def test_an_unreachable_database_is_503_without_driver_text() -> None:
    url = "postgresql+psycopg://app:hunter2@127.0.0.1:9/cosmos"
    with serving(create_app(url, require_current_schema=False)) as base:
        for path in ("/health", "/runs", "/runs/x"):
            response = httpx.get(base + path, timeout=30)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/problem+json"
            assert "hunter2" not in response.text
            assert "127.0.0.1" not in response.text
            assert "psycopg" not in response.text.lower()


def test_cors_is_off_by_default_and_on_for_the_origins_given() -> None:
    preflight = {
        "Origin": "https://dash.example",
        "Access-Control-Request-Method": "POST",
    }
    closed = create_app("sqlite://", require_current_schema=False)
    opened = create_app(
        "sqlite://", cors_origins=["https://dash.example"], require_current_schema=False
    )
    with serving(closed) as base:
        response = httpx.options(f"{base}/runs", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with serving(opened) as base:
        response = httpx.options(f"{base}/runs", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://dash.example"


def test_a_stream_of_a_finished_run_ends_without_waiting_a_keepalive(url: str) -> None:
    # It waited one keep-alive interval (15 s by default) before reading the run's status.
    with (
        DatabaseConnection(url) as db,
        serving(create_app(url, tokens=TOKENS, keepalive=60)) as base,
    ):
        run_id = create_run(db, new_prompt(db)).id
        transition(db, run_id, "running")
        record_progress(db, run_id, "render", 10.0)
        transition(db, run_id, "completed")
        started = time.monotonic()
        with httpx.stream("GET", f"{base}/runs/{run_id}/events", timeout=30) as response:
            events = read_events(response.iter_lines())
        assert [e["event"] for e in events] == ["progress", "end"]
        assert time.monotonic() - started < 30  # not the 60 s keep-alive
