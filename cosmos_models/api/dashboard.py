"""The dashboard page: static files served at ``/``, its live data routes, and its settings.

The page (``static/``: plain HTML, CSS and JavaScript, no build step) reads the kit's run and
prompt endpoints and follows ``/events`` (see ``live.py``). It is read-only unless the server was
started with actions allowed; even then a cancel goes through the API's cancel endpoint, its
transition rules and its token check.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from cosmos_models.api.live import LiveHub, live_router
from cosmos_models.errors import InvalidArgumentError

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
"""Where the page's files live inside the package (shipped in the wheel)."""


@dataclass
class DashboardSettings:
    """The dashboard of one app: what the page may offer, and the hub feeding ``/events``."""

    actions: bool
    interval: float
    stats_interval: float = 2.0
    hub: LiveHub | None = None


def mount_dashboard(app: FastAPI, *, actions: bool = False, interval: float = 0.25) -> None:
    """Serve the dashboard at ``/`` and its data at ``/stats`` and ``/events`` on ``app``.

    ``app`` runs the kit's lifespan (``create_app`` or ``cosmos_lifespan``): the data is read
    through its ``AsyncDatabase``. ``actions`` shows a cancel button on unfinished runs (the
    cancel itself is the API's, with its token check); ``interval`` is how often (seconds) the
    runs are read while a browser follows them. The app's shutdown ends the streams. Raises
    ``ValueError`` naming ``interval``.
    """
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise InvalidArgumentError(
            f"interval: must be a positive number of seconds, got {interval!r}"
        )
    settings = DashboardSettings(actions=bool(actions), interval=float(interval))
    app.state.cosmos_dashboard = settings

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def dashboard_settings() -> dict[str, bool]:
        return {"actions": settings.actions}

    app.add_api_route("/", index, include_in_schema=False)
    app.add_api_route(
        "/dashboard/settings",
        dashboard_settings,
        operation_id="dashboard_settings",
        summary="What the dashboard page may offer (actions: a cancel button)",
        tags=["dashboard"],
    )
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.include_router(live_router)
    app.router.lifespan_context = _closing(app.router.lifespan_context, settings)


def _closing(
    inner: Callable[[Any], AbstractAsyncContextManager[Any]], settings: DashboardSettings
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """The app's lifespan, with the hub closed at shutdown (its streams end) before it."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            try:
                yield state
            finally:
                if settings.hub is not None:
                    await settings.hub.close()
                    settings.hub = None

    return lifespan
