"""The HTTP API over real HTTP (uvicorn + httpx) on every backend: shapes, statuses, errors."""

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cosmos_models import DatabaseConnection, get_run
from cosmos_models.api import create_app
from cosmos_models.api.streams import MAX_BATCH_EVENTS
from cosmos_models.db.migrate import upgrade
from tests.api_server import TOKENS, WRITER, serving
from tests.databases import URL_BACKENDS, fresh_url

PROBLEM = "application/problem+json"
PROMPT = {
    "model_type": "transfer",
    "prompt_text": "a harbour at dawn",
    "inputs": {"video": "/in/harbour.mp4"},
    "parameters": {"steps": 30},
}


@dataclass
class Api:
    """A served app, a client that writes, and a connection to look at what was stored."""

    client: httpx.Client
    db: DatabaseConnection
    url: str


@pytest.fixture(scope="module", params=URL_BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp_path = tmp_path_factory.mktemp("api")
    with fresh_url(str(request.param), tmp_path) as url:
        upgrade(url, report=lambda _: None)
        app = create_app(url, tokens=TOKENS, keepalive=0.2)
        with (
            serving(app) as base,
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {WRITER}"}, timeout=30
            ) as client,
            DatabaseConnection(url) as db,
        ):
            yield Api(client, db, base)


def new_prompt(api: Api, **changes: object) -> dict[str, object]:
    response = api.client.post("/prompts", json={**PROMPT, **changes})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_prompts_create_get_update_list_delete(api: Api) -> None:
    kind = f"kind-{id(api)}-prompts"
    created = [new_prompt(api, model_type=kind, prompt_text=f"p{i}") for i in range(3)]
    first = created[0]
    assert api.client.get(f"/prompts/{first['id']}").json() == first
    patched = api.client.patch(f"/prompts/{first['id']}", json={"parameters": {"steps": 9}})
    assert patched.status_code == 200
    assert patched.json() == {**first, "parameters": {"steps": 9}}
    page = api.client.get("/prompts", params={"model_type": kind, "limit": 2}).json()
    assert [item["id"] for item in page["items"]] == [created[2]["id"], created[1]["id"]]
    rest = api.client.get(
        "/prompts", params={"model_type": kind, "limit": 2, "cursor": page["next_cursor"]}
    ).json()
    assert [item["id"] for item in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None
    assert api.client.delete(f"/prompts/{first['id']}").status_code == 204
    gone = api.client.get(f"/prompts/{first['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM
    assert gone.json() == {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "detail": f"prompt {first['id']!r} does not exist",
    }


def test_runs_lifecycle_and_progress(api: Api) -> None:
    prompt = new_prompt(api)
    run = api.client.post("/runs", json={"prompt_id": prompt["id"]}).json()
    assert (run["status"], run["model_type"]) == ("pending", "transfer")
    moved = api.client.post(f"/runs/{run['id']}/transition", json={"to": "running"})
    assert moved.json()["status"] == "running"
    one = api.client.post(f"/runs/{run['id']}/progress", json={"stage": "render", "percentage": 10})
    assert one.status_code == 201
    assert one.json()["seq"] == 1
    batch = api.client.post(
        "/progress",
        json=[
            {"run_id": run["id"], "stage": "render", "percentage": 50, "message": "half"},
            {"run_id": run["id"], "stage": "render", "percentage": 90},
        ],
    )
    assert batch.json() == {"recorded": 2}
    detail = api.client.get(f"/runs/{run['id']}").json()
    assert detail["prompt"]["id"] == prompt["id"]
    assert (detail["latest_progress"]["seq"], detail["latest_progress"]["percentage"]) == (3, 90)
    since = api.client.get(f"/runs/{run['id']}/progress", params={"after": 1}).json()
    assert [event["seq"] for event in since] == [2, 3]
    listed = api.client.get(
        "/runs", params=[("prompt_id", prompt["id"]), ("status", "running"), ("status", "failed")]
    ).json()
    assert [item["id"] for item in listed["items"]] == [run["id"]]
    cancelled = api.client.post(f"/runs/{run['id']}/cancel", json={"error_message": "stop"})
    assert (cancelled.json()["status"], cancelled.json()["error_message"]) == ("cancelled", "stop")
    assert api.client.delete(f"/runs/{run['id']}").status_code == 204
    assert api.client.get(f"/runs/{run['id']}").status_code == 404
    assert api.client.get(f"/prompts/{prompt['id']}").status_code == 200


def problem_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = dict(response.json())
    assert body["status"] == status
    return body


def test_client_errors_are_problems_never_500s(api: Api) -> None:
    prompt = new_prompt(api)
    # A status other than pending in RunCreate: once a 500 (plain ValueError), now a 422.
    body = problem_of(
        api.client.post("/runs", json={"prompt_id": prompt["id"], "status": "running"}), 422
    )
    assert "status" in str(body["detail"])
    problem_of(api.client.get("/runs", params={"cursor": "garbage!"}), 422)
    problem_of(api.client.get("/runs", params={"created_after": "2025-01-01T00:00:00"}), 422)
    invalid = problem_of(api.client.post("/prompts", json={**PROMPT, "prompt_text": " "}), 422)
    assert invalid["errors"] == [
        {
            "loc": ["body", "prompt_text"],
            "msg": "Value error, must not be empty or whitespace",
            "type": "value_error",
        }
    ]
    problem_of(api.client.post("/prompts", json={**PROMPT, "id": prompt["id"]}), 409)
    run = api.client.post("/runs", json={"prompt_id": prompt["id"]}).json()
    problem_of(api.client.post(f"/runs/{run['id']}/transition", json={"to": "completed"}), 409)
    api.client.post(f"/runs/{run['id']}/cancel")
    problem_of(api.client.post(f"/runs/{run['id']}/cancel"), 409)
    finished = problem_of(
        api.client.post(f"/runs/{run['id']}/progress", json={"stage": "s", "percentage": 1}), 409
    )
    assert "cancelled" in str(finished["detail"])
    problem_of(api.client.post("/runs", json={"prompt_id": "nope"}), 404)
    # Checked by the service (ProgressCreate), not by the route: the same 422 shape.
    live = api.client.post("/runs", json={"prompt_id": prompt["id"]}).json()
    out_of_range = problem_of(
        api.client.post(f"/runs/{live['id']}/progress", json={"stage": "s", "percentage": 101}),
        422,
    )
    assert [error["loc"] for error in out_of_range["errors"]] == [["body", "percentage"]]
    problem_of(api.client.get("/runs/x/progress", params={"after": -1}), 422)
    too_many = [{"run_id": live["id"], "stage": "s", "percentage": 1}] * (MAX_BATCH_EVENTS + 1)
    problem_of(api.client.post("/progress", json=too_many), 422)
    assert api.client.get(f"/runs/{live['id']}/progress").json() == []  # nothing written
    problem_of(api.client.get("/nowhere"), 404)
    assert get_run(api.db, run["id"]).status == "cancelled"


def test_health_reports_the_revision(api: Api) -> None:
    health = api.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["read_only"] is False


def test_a_value_too_large_for_the_server_is_a_422_naming_the_limit() -> None:
    from cosmos_models.api.errors import _detail, status_of
    from cosmos_models.errors import ValueTooLargeError

    error = ValueTooLargeError("value too large: … (max_allowed_packet: 16,777,216 bytes)")
    assert status_of(error) == 422
    assert "max_allowed_packet" in _detail(error, 422)


def test_an_argument_error_names_its_argument_in_errors(api: Api) -> None:
    # The README promises errors with loc/msg for every 422; argument errors had detail alone.
    response = api.client.get("/runs", params={"cursor": "!!!"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    (error,) = response.json()["errors"]
    assert error["loc"] == ["cursor"]
    assert error["msg"].startswith("not a cursor returned by list_runs")
