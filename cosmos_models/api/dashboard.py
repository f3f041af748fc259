"""The dashboard page: static files served at ``/``, its live data routes, and its settings.

The page (``static/``: plain HTML, CSS and JavaScript, no build step) reads the kit's run and
prompt endpoints and follows ``/events`` (see ``live.py``). It is read-only unless the server was
started with actions allowed; even then a cancel goes through the API's cancel endpoint, its
transition rules and its token check.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from cosmos_models.api.live import LiveHub, live_router
from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.services.common import check_connection

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
"""Where the page's files live inside the package (shipped in the wheel)."""


def mount_dashboard(
    app: FastAPI,
    db: DatabaseConnection,
    *,
    actions: bool = False,
    interval: float = 0.25,
) -> LiveHub:
    """Serve the dashboard at ``/`` and its data at ``/stats`` and ``/events`` on ``app``.

    ``db`` is a connection the caller owns (opened before, closed after the app runs);
    ``actions`` shows a cancel button on unfinished runs; ``interval`` is how often (seconds)
    the runs are read while a browser follows them. Returns the hub that feeds ``/events``;
    the app's shutdown ends its streams. Raises ``ValueError`` naming ``db`` or ``interval``.
    """
    check_connection(db)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise ValueError(f"interval: must be a positive number of seconds, got {interval!r}")
    hub = LiveHub(db, interval=float(interval))
    app.state.cosmos_live_hub = hub
    settings = {"actions": bool(actions)}

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def dashboard_settings() -> dict[str, bool]:
        return settings

    app.add_api_route("/", index, include_in_schema=False)
    app.add_api_route(
        "/dashboard/settings",
        dashboard_settings,
        summary="What the dashboard page may offer (actions: a cancel button)",
        tags=["dashboard"],
    )
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.include_router(live_router)
    app.router.lifespan_context = _closing(app.router.lifespan_context, hub)
    return hub


def _closing(
    inner: Callable[[Any], AbstractAsyncContextManager[Any]], hub: LiveHub
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """The app's lifespan, then the hub closed at shutdown (its streams end)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            try:
                yield state
            finally:
                await hub.close()

    return lifespan
