"""The app's life: a lifespan that opens the database, and the dependency giving it to routes.

A host app mounting ``create_router()`` uses ``cosmos_lifespan(...)`` as (or inside) its
lifespan; ``create_app()`` (api/factory.py) does that for the whole service. The lifespan
opens an ``AsyncDatabase``, checks that its schema is at head (``check_schema``: run
``cosmos-models db upgrade`` once per deploy, not in every worker) and reads the tokens.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from cosmos_models.aio import AsyncDatabase
from cosmos_models.api.auth import TokenStore, log
from cosmos_models.db.migrate import check_schema
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.models.checks import check_seconds

DEFAULT_KEEPALIVE = 15.0


@dataclass(frozen=True)
class ApiState:
    """What the routes need, kept in the lifespan state as ``cosmos``."""

    database: AsyncDatabase
    tokens: TokenStore
    keepalive: float


def cosmos_lifespan(
    database_url: Any = None,
    *,
    tokens: str | None = None,
    keepalive: float = DEFAULT_KEEPALIVE,
    require_current_schema: bool = True,
    host_auth: bool = False,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI lifespan: open the database (default ``COSMOS_DATABASE_URL``) for the app's life.

    ``tokens`` as ``COSMOS_API_TOKENS`` (default: that variable). ``keepalive``: seconds between
    SSE comments on an idle stream (when a stream also notices its run has finished). Startup
    raises ``SchemaNotCurrentError`` naming the command to run when the schema is not at head
    (unless ``require_current_schema=False``), ``DatabaseError`` if the database cannot be
    reached; the call raises ``InvalidArgumentError`` for a bad token list or ``keepalive``.
    ``host_auth=True``: the routes use the host's own ``auth`` dependency, so a missing token
    list does not make the API read-only (and is not announced as such).
    """
    store = TokenStore.from_environment() if tokens is None else TokenStore.parse(tokens)
    seconds = check_seconds(keepalive, "keepalive", allow_zero=False)
    if seconds is None:
        raise InvalidArgumentError("keepalive: must be a number of seconds, got None")

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
        async with AsyncDatabase(database_url) as database:
            if require_current_schema:
                await database.run_sync(check_schema)
            if not store.entries and not host_auth:
                log.warning(
                    "cosmos_models API is read-only: no COSMOS_API_TOKENS configured "
                    "(writes answer 403)"
                )
            yield {"cosmos": ApiState(database, store, seconds)}

    return lifespan


def state_of(request: Request) -> ApiState:
    """The API state of the lifespan (``RuntimeError`` if the lifespan is not installed)."""
    state = getattr(request.state, "cosmos", None)
    if not isinstance(state, ApiState):
        raise RuntimeError("cosmos_models API used without cosmos_lifespan() installed")
    return state


def get_database(request: Request) -> AsyncDatabase:
    """The dependency giving a route the app's ``AsyncDatabase``."""
    return state_of(request).database


Database = Annotated[AsyncDatabase, Depends(get_database)]
