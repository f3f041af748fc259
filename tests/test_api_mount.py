"""A host app mounts the router with its own routes, and ``cosmos-models serve`` runs the app."""

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from cosmos_models import aio
from cosmos_models.aio import AsyncDatabase
from cosmos_models.api import add_exception_handlers, cosmos_lifespan, create_router, get_database
from cosmos_models.cli import main
from cosmos_models.db.migrate import upgrade
from tests.api_server import TOKENS, WRITER
from tests.databases import URL_BACKENDS, fresh_url


@pytest.fixture(params=URL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_url(str(request.param), tmp_path) as url:
        upgrade(url, report=lambda _: None)
        yield url


def test_a_host_app_mounts_the_router_beside_its_own_routes(url: str) -> None:
    app = FastAPI(lifespan=cosmos_lifespan(url, tokens=TOKENS))
    app.include_router(create_router(), prefix="/cosmos")
    add_exception_handlers(app)

    @app.get("/mine/{run_id}")
    async def mine(run_id: str, database: Annotated[AsyncDatabase, Depends(get_database)]) -> Any:
        run = await aio.get_run(database, run_id)
        return {"status": run.status}

    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {WRITER}"}
        prompt = client.post(
            "/cosmos/prompts",
            json={"model_type": "t", "prompt_text": "x", "inputs": {}, "parameters": {}},
            headers=auth,
        ).json()
        run = client.post("/cosmos/runs", json={"prompt_id": prompt["id"]}, headers=auth).json()
        assert client.get(f"/mine/{run['id']}").json() == {"status": "pending"}
        missing = client.get("/mine/nope")  # the package's error, through the host's route
        assert (missing.status_code, missing.headers["content-type"]) == (
            404,
            "application/problem+json",
        )
        paths = client.get("/openapi.json").json()["paths"]
        assert "/cosmos/runs/{run_id}/events" in paths


def test_routes_without_the_lifespan_fail_loudly() -> None:
    app = FastAPI()
    app.include_router(create_router())
    add_exception_handlers(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/runs")
    assert response.status_code == 500
    assert response.json()["detail"] == "an unexpected error occurred"


def test_serve_runs_uvicorn_with_the_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(app=app, **options))
    location = str(tmp_path / "s.db")
    with pytest.raises(SystemExit) as refused:
        main(["serve", "--database", location])
    assert refused.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "s.db").exists()  # nothing created
    upgrade(location, report=lambda _: None)
    with pytest.raises(SystemExit) as done:
        main(["serve", "-d", location, "--port", "8123", "--cors-origin", "https://a.example"])
    assert done.value.code == 0
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert type(seen["app"]).__name__ == "FastAPI"


def test_operation_ids_are_stable_names_for_generated_clients() -> None:
    from cosmos_models.api import create_app

    schema = create_app("sqlite://", tokens="").openapi()
    operations = {
        operation["operationId"]: (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    assert operations == {
        "create_prompt": ("POST", "/prompts"),
        "list_prompts": ("GET", "/prompts"),
        "get_prompt": ("GET", "/prompts/{prompt_id}"),
        "update_prompt": ("PATCH", "/prompts/{prompt_id}"),
        "delete_prompt": ("DELETE", "/prompts/{prompt_id}"),
        "create_run": ("POST", "/runs"),
        "list_runs": ("GET", "/runs"),
        "get_run": ("GET", "/runs/{run_id}"),
        "transition_run": ("POST", "/runs/{run_id}/transition"),
        "cancel_run": ("POST", "/runs/{run_id}/cancel"),
        "delete_run": ("DELETE", "/runs/{run_id}"),
        "record_progress": ("POST", "/runs/{run_id}/progress"),
        "record_progress_batch": ("POST", "/progress"),
        "list_progress": ("GET", "/runs/{run_id}/progress"),
        "stream_events": ("GET", "/runs/{run_id}/events"),
        "health": ("GET", "/health"),
        # the dashboard's
        "dashboard_stats": ("GET", "/stats"),
        "stream_run_states": ("GET", "/events"),
        "list_run_states": ("GET", "/dashboard/runs"),
        "dashboard_settings": ("GET", "/dashboard/settings"),
    }
    created = schema["paths"]["/runs"]["post"]["responses"]["201"]
    assert set(created["links"]) >= {"get_run", "transition_run", "record_progress"}
    assert schema["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]
