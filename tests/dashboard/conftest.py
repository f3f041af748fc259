"""Fixtures of the dashboard tests: the app served over HTTP, and a headless chromium page.

A page fails its test on a console error, an uncaught exception or a dialog (``alert`` from
injected markup). Without chromium the browser tests are skipped and listed like a down server
on a laptop, and fail in CI (``COSMOS_REQUIRE_BACKENDS=1``).
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cosmos_models import DatabaseConnection
from cosmos_models.api.dashboard import DashboardSettings
from tests.api_server import TOKENS, WRITER, serving
from tests.backends import backends_required
from tests.conftest import _unreachable
from tests.databases import URL_BACKENDS

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The system browser Playwright launches (``COSMOS_CHROMIUM`` overrides), or None.

    Nothing is downloaded at test time: ``playwright install`` is never run.
    """
    wanted = os.environ.get("COSMOS_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    found = (shutil.which(name) for name in CHROMIUM_NAMES)
    return next((path for path in found if path), None)


# The kit opens its own connections from a URL: an in-memory SQLite database of the test
# process cannot be named by one, so the API's backends are the three others.
@pytest.fixture(params=URL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backends the HTTP kit serves (overrides the package-wide fixture here)."""
    return str(request.param)


def make_app(db: DatabaseConnection, *, actions: bool = False, tokens: str | None = None) -> Any:
    """The kit's app with its dashboard, on ``db``'s database, reading the runs every 0.1 s."""
    from cosmos_models.api import create_app

    app = create_app(db.url, tokens=tokens or "", dashboard_actions=actions)
    settings: DashboardSettings = app.state.cosmos_dashboard
    settings.interval, settings.stats_interval = 0.1, 0.3
    return app


@pytest.fixture
def server(db: DatabaseConnection) -> Iterator[str]:
    """The base URL of the app on ``db`` (every API backend), served by uvicorn; read-only page."""
    with serving(make_app(db, tokens=TOKENS)) as url:
        yield url


@pytest.fixture
def api(server: str) -> Iterator[Any]:
    """An HTTP client of ``server`` writing with a read-write token."""
    import httpx

    headers = {"Authorization": f"Bearer {WRITER}"}
    with httpx.Client(base_url=server, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright, headless, one per test module.

    Not one per session: Playwright's sync API runs an event loop in the main thread while it is
    open, and every later ``asyncio.run`` (the async side's tests) would refuse to start.
    """
    executable = chromium_path()
    if executable is None:
        reason = "chromium not installed (make browser): browser tests not run"
        if backends_required():
            pytest.fail(f"browser required in CI but unavailable: {reason}", pytrace=False)
        _unreachable["chromium"] = reason
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class PageProblems:
    """Console errors, page errors and dialogs seen by a page."""

    def __init__(self) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    def assert_none(self) -> None:
        assert (self.console, self.errors, self.dialogs) == ([], [], [])


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, PageProblems]]:
    """A fresh page (own context) whose console errors and dialogs fail the test."""
    # The page's Content-Security-Policy forbids eval, which Playwright's wait_for_function
    # needs; bypassed, the XSS test shows that the page is safe by itself (textContent only).
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    problems = PageProblems()
    page.on(
        "console",
        lambda message: problems.console.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.errors.append(str(error)))

    def on_dialog(dialog: Any) -> None:
        problems.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page, problems
    finally:
        context.close()
        problems.assert_none()
