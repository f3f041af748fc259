"""``create_app``: the whole HTTP service, its routes, lifespan, error handlers and CORS."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cosmos_models.api.app import DEFAULT_KEEPALIVE, cosmos_lifespan
from cosmos_models.api.auth import AccessDependency
from cosmos_models.api.dashboard import mount_dashboard
from cosmos_models.api.errors import add_exception_handlers
from cosmos_models.api.routes import create_router


def create_app(
    database_url: Any = None,
    *,
    tokens: str | None = None,
    auth: AccessDependency | None = None,
    cors_origins: Sequence[str] = (),
    keepalive: float = DEFAULT_KEEPALIVE,
    require_current_schema: bool = True,
    dashboard_actions: bool = False,
) -> FastAPI:
    """The cosmos_models HTTP API as a FastAPI app (see ``cosmos_lifespan`` for the options).

    ``auth``: the host's own dependency returning an ``Access``, instead of bearer tokens.
    ``cors_origins``: origins allowed by CORS (none by default: CORS off).
    The dashboard page is served at ``/``; ``dashboard_actions`` gives it a cancel button (the
    cancel is the API's, behind its token check), read-only otherwise.
    """
    app = FastAPI(
        title="cosmos_models",
        summary="Prompts, runs and their progress for AI video models.",
        lifespan=cosmos_lifespan(
            database_url,
            tokens=tokens,
            keepalive=keepalive,
            require_current_schema=require_current_schema,
            host_auth=auth is not None,
        ),
    )
    app.include_router(create_router(auth=auth))
    add_exception_handlers(app)
    mount_dashboard(app, actions=dashboard_actions)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    return app
