"""The dashboard in a real browser (Debian's chromium), on every backend the API serves.

``page`` comes last in each test's arguments: it is closed first, before the server stops.

Runs are created and moved through the HTTP API, as workers would; the page must follow them
without a reload. Stored text with markup must show literally, and no dialog may open.
"""

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cosmos_models import (
    DatabaseConnection,
    PromptCreate,
    RunStatus,
    create_prompt,
    create_run,
    get_run,
    record_progress,
    transition,
)
from cosmos_models.db.tables import RUNS
from tests.api_server import READER, TOKENS, WRITER, serving
from tests.dashboard.conftest import ARTIFACTS, PageProblems, make_app
from tests.dashboard.data import add_prompt

XSS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<b>bold</b> & <i>markup</i>",
)


def add_run(
    api: httpx.Client, model_type: str = "transfer", text: str = "a city"
) -> dict[str, Any]:
    prompt = api.post(
        "/prompts",
        json={"model_type": model_type, "prompt_text": text, "inputs": {}, "parameters": {}},
    )
    assert prompt.status_code == 201, prompt.text
    run = api.post("/runs", json={"prompt_id": prompt.json()["id"]})
    assert run.status_code == 201, run.text
    return dict(run.json())


def advance(api: httpx.Client, run_id: str, to: str) -> None:
    moved = api.post(f"/runs/{run_id}/transition", json={"to": to})
    assert moved.status_code == 200, moved.text


def progress(api: httpx.Client, run_id: str, percentage: float, **extra: str) -> None:
    body = {"stage": "inference", "percentage": percentage, "message": "working", **extra}
    posted = api.post(f"/runs/{run_id}/progress", json=body)
    assert posted.status_code == 201, posted.text


def row(page: Any, run_id: str) -> Any:
    return page.locator(f"#runs tbody tr[data-run-id={json.dumps(run_id)}]")


def bar_width(page: Any, run_id: str) -> str:
    return str(row(page, run_id).locator(".bar > span").evaluate("node => node.style.width"))


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready] #connection.live")


def test_page_loads_without_errors_and_shows_the_runs(
    server: str, api: httpx.Client, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    run = add_run(api)
    advance(api, run["id"], "running")
    progress(api, run["id"], 30.0, message="step 10/35")
    open_page(tab, server)
    cells = row(tab, run["id"]).locator("td")
    assert cells.nth(2).text_content() == "running"
    assert cells.nth(5).text_content() == "step 10/35"
    assert bar_width(tab, run["id"]) == "30%"
    assert tab.locator('#counts li[data-status="running"] b').text_content() == "1"
    assert "events/s" in (tab.locator("#rate").text_content() or "")
    assert not tab.locator("#run-actions").is_visible()
    problems.assert_none()


def test_a_new_run_appears_and_its_bar_moves_without_a_reload(
    server: str, api: httpx.Client, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    open_page(tab, server)
    tab.evaluate("window.loadedOnce = true")  # gone if the page reloads
    run = add_run(api, model_type="predict")
    tab.wait_for_selector(f'#runs tbody tr[data-run-id="{run["id"]}"]', timeout=1000)
    advance(api, run["id"], "running")
    for percentage in (25.0, 60.0):
        progress(api, run["id"], percentage)
        started = time.monotonic()
        tab.wait_for_function(
            f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"] .bar > span')"
            f".style.width === '{percentage:g}%'",
            timeout=1000,
        )
        print(f"bar moved to {percentage:g}% {time.monotonic() - started:.3f}s after the POST")
    advance(api, run["id"], "completed")
    tab.wait_for_function(
        f"document.querySelector('#runs tr[data-run-id=\"{run['id']}\"]').className"
        " === 'completed'",
        timeout=1000,
    )
    assert row(tab, run["id"]).locator("td").nth(6).text_content() != ""  # its duration
    assert tab.evaluate("window.loadedOnce") is True
    problems.assert_none()


def test_status_and_model_type_filters(
    server: str, api: httpx.Client, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    transfer = add_run(api, model_type="transfer")
    reason = add_run(api, model_type="reason")
    advance(api, reason["id"], "running")
    open_page(tab, server)
    rows = tab.locator("#runs tbody tr")
    assert rows.count() == 2
    tab.select_option("#status-filter", "running")
    tab.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
    assert rows.first.get_attribute("data-run-id") == reason["id"]
    tab.select_option("#status-filter", "")
    tab.fill("#model-filter", "transfer")
    tab.dispatch_event("#model-filter", "change")
    tab.wait_for_function(
        "document.querySelectorAll('#runs tbody tr').length === 1"
        f" && document.querySelector('#runs tbody tr').dataset.runId === '{transfer['id']}'"
    )
    tab.fill("#model-filter", "no such model")
    tab.dispatch_event("#model-filter", "change")
    tab.wait_for_function("document.querySelector('#list-note').textContent === 'no runs match'")
    problems.assert_none()


def test_stored_markup_shows_as_text_and_runs_no_script(
    db: DatabaseConnection, server: str, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    ids = []
    # Through the services: an id holding "/" cannot be named in the API's paths.
    for index, text in enumerate(XSS):
        prompt = PromptCreate(
            id=f"p{index}{text}", model_type=text, prompt_text=text, inputs={}, parameters={}
        )
        prompt_id = create_prompt(db, prompt).id
        ids.append(create_run(db, {"id": f"r{index}{text}", "prompt_id": prompt_id}).id)
        transition(db, ids[-1], RunStatus.RUNNING)
        record_progress(db, ids[-1], text, 50.0, text)
    open_page(tab, server)
    for run_id, text in zip(ids, XSS, strict=True):
        cells = row(tab, run_id).locator("td")
        texts = [cells.nth(i).text_content() for i in (0, 1, 4, 5)]
        assert texts == [run_id, text, text, text]
    assert tab.locator("#runs img, #runs script, #runs b, #runs i").count() == 0
    # The run page of an id without "/" (the API's paths cannot carry one).
    run_id = ids[1]
    row(tab, run_id).locator("a").click()
    tab.wait_for_selector("#timeline li")
    assert tab.locator("#run-title").text_content() == run_id
    assert tab.locator("#prompt-text").text_content() == XSS[1]
    assert tab.locator("#timeline li .message").first.text_content() == XSS[1]
    assert tab.locator("#run-view img, #run-view script").count() == 0
    problems.assert_none()


def test_run_page_shows_prompt_json_timeline_and_chart(
    server: str, api: httpx.Client, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    prompt = api.post(
        "/prompts",
        json={
            "model_type": "transfer",
            "prompt_text": "cyberpunk city at night",
            "inputs": {"video": "/inputs/city.mp4"},
            "parameters": {"num_steps": 35},
        },
    ).json()
    run = api.post(
        "/runs", json={"prompt_id": prompt["id"], "execution_config": {"gpu_node": "gpu-7"}}
    ).json()
    advance(api, run["id"], "running")
    for percentage in (0.0, 40.0):
        progress(api, run["id"], percentage)
    tab.goto(f"{server}/#/runs/{run['id']}")
    tab.wait_for_function("document.querySelectorAll('#timeline li').length === 2")
    # Read-only unless actions are allowed: no token field, no cancel button.
    assert tab.locator("#run-actions").is_hidden()
    assert tab.locator("#cancel").is_hidden()
    assert tab.locator("#prompt-text").text_content() == "cyberpunk city at night"
    blocks = tab.locator("#json-blocks pre")
    assert '"num_steps": 35' in (blocks.nth(1).text_content() or "")
    assert '"gpu_node": "gpu-7"' in (blocks.nth(2).text_content() or "")
    progress(api, run["id"], 90.0)  # pushed to the open run page
    tab.wait_for_function("document.querySelectorAll('#timeline li').length === 3", timeout=2000)
    points = tab.locator("#chart polyline").get_attribute("points") or ""
    assert len(points.split()) == 3
    advance(api, run["id"], "completed")
    tab.wait_for_function(
        "[...document.querySelectorAll('#run-facts dd')].some(d => d.textContent === 'completed')"
    )
    # An address that is not %-encoded text, and an unknown run: said on the page, no error.
    tab.goto(f"{server}/#/runs/%E0%A4%A")
    tab.wait_for_function("document.querySelector('#run-title').textContent.includes('404')")
    problems.console[:] = [m for m in problems.console if "404 (Not Found)" not in m]
    problems.assert_none()


def test_screenshot_with_demo_data(
    server: str, api: httpx.Client, backend: str, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    plans = [
        ("transfer", "cyberpunk city at night", "completed", 100.0, "downloading", "saved"),
        ("transfer", "snowy mountain road at dawn", "running", 64.0, "inference", "step 22/35"),
        ("reason", "What happens next in this scene?", "running", 35.0, "inference", "thinking"),
        ("predict", "Continue this animation", "uploading", 80.0, "uploading", "frames 4/5"),
        ("predict", "A drone flight over a harbour", "failed", 50.0, "inference", "GPU OOM"),
        ("reason", "Describe the traffic", "pending", None, "", ""),
    ]
    for model_type, text, status, percentage, stage, message in plans:
        run = add_run(api, model_type=model_type, text=text)
        path = {"completed": ["running"], "failed": ["running"], "running": ["running"]}
        for step in path.get(status, ["uploading"] if status == "uploading" else []):
            advance(api, run["id"], step)
        if percentage is not None:
            progress(api, run["id"], percentage, stage=stage, message=message)
        if status in ("completed", "failed"):
            advance(api, run["id"], status)
    open_page(tab, server)
    tab.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 6")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{backend}.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    problems.assert_none()


def test_cancel_only_when_actions_are_allowed_and_with_a_writer_token(
    db: DatabaseConnection, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    run_id = create_run(db, {"prompt_id": add_prompt(db)}).id
    transition(db, run_id, RunStatus.RUNNING)
    with serving(make_app(db, actions=True, tokens=TOKENS)) as url:
        tab.goto(f"{url}/#/runs/{run_id}")
        tab.wait_for_selector("#run-actions:not([hidden])")
        for token, refusal in (("not-a-token", "refused: 401"), (READER, "refused: 403")):
            tab.fill("#token", token)
            tab.click("#cancel")
            tab.wait_for_function(
                f"document.querySelector('#action-note').textContent.startsWith('{refusal}')"
            )
        assert get_run(db, run_id).status is RunStatus.RUNNING
        tab.fill("#token", WRITER)
        tab.click("#cancel")
        tab.wait_for_function(
            "document.querySelector('#action-note').textContent === 'now cancelled'"
        )
        assert get_run(db, run_id).status is RunStatus.CANCELLED
        tab.wait_for_selector("#run-actions[hidden]", state="attached")
        tab.close()  # before the server stops: its streams end first
    # The browser logs the two refusals it was sent; nothing else.
    assert [message for message in problems.console if "(Unauthorized)" in message] != []
    problems.console[:] = [m for m in problems.console if "401" not in m and "403" not in m]
    problems.assert_none()


def test_five_thousand_active_runs_render_one_page_and_update_cheaply(
    db: DatabaseConnection, server: str, page: tuple[Any, PageProblems]
) -> None:
    tab, problems = page
    prompt_id = add_prompt(db)
    start = datetime.now(UTC) - timedelta(minutes=10)
    # Core statements: 5,000 validated ORM rows and events would cost seconds per backend, and
    # the feed reads the runs' summary columns only (written here as record_progress would).
    rows = [
        {
            "id": f"busy-{i:05d}",
            "prompt_id": prompt_id,
            "model_type": ("transfer", "reason", "predict")[i % 3],
            "status": RunStatus.RUNNING,
            "execution_config": {},
            "outputs": {},
            "metadata": {},
            "created_at": start + timedelta(milliseconds=i),
            "updated_at": start,
            "started_at": start + timedelta(milliseconds=i),
            "progress_count": 0,
            "latest_seq": 0,
        }
        for i in range(5000)
    ]
    with db.engine.begin() as connection:
        connection.execute(RUNS.insert(), rows)
    tab.goto(server)
    tab.wait_for_selector("body[data-ready] #connection.live")
    tab.wait_for_function("window.dashboardMetrics.updates.some(u => u.runs === 5000)")
    metrics = tab.evaluate("window.dashboardMetrics")
    snapshot_ms = next(u["ms"] for u in metrics["updates"] if u["runs"] == 5000)
    assert tab.locator("#runs tbody tr").count() == 50  # one page rendered, not 5,000 rows
    assert tab.locator("#counts li[data-status=running] b").text_content() == "5000"
    # A burst from every worker at once: a new latest event for each of the 5,000 runs.
    before = len(metrics["updates"])
    with db.engine.begin() as connection:
        connection.execute(
            RUNS.update().values(
                latest_seq=RUNS.c.latest_seq + 1,
                latest_stage="inference",
                latest_percentage=42.0,
                latest_message="step 15/35",
                latest_at=datetime.now(UTC),
            )
        )
    tab.wait_for_function(
        "document.querySelector('#runs tr[data-run-id=\"busy-04999\"] .bar > span')"
        ".style.width === '42%'",
        timeout=5000,
    )
    updates = tab.evaluate("window.dashboardMetrics.updates")[before:]
    burst_runs = sum(u["runs"] for u in updates)
    burst_ms = sum(u["ms"] for u in updates)
    started = time.monotonic()
    tab.click("#more")
    tab.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 100")
    more_ms = (time.monotonic() - started) * 1000
    print(
        f"\n5,000 active runs: first render {metrics['firstRenderMs']:.0f} ms after navigation, "
        f"snapshot of 5,000 applied in {snapshot_ms:.1f} ms, "
        f"burst of {burst_runs} updates in {len(updates)} messages applied in {burst_ms:.1f} ms "
        f"({1000 * burst_ms / max(burst_runs, 1):.1f} µs per run), next page in {more_ms:.0f} ms"
    )
    assert burst_runs >= 5000
    # Sanity bounds only (a shared 2-core machine): the figures are printed, not targets.
    assert metrics["firstRenderMs"] < 20_000
    assert snapshot_ms < 5_000
    assert burst_ms < 5_000
    problems.assert_none()
