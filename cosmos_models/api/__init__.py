"""cosmos_models.api: the HTTP API (FastAPI), installed with the ``api`` extra.

``create_app(database_url)`` is the whole service (``cosmos-models serve`` runs it with
uvicorn). To mount it in an existing app: ``create_router()`` with ``cosmos_lifespan(...)`` and
``add_exception_handlers(app)``. ``get_database`` is the dependency giving a route the
``AsyncDatabase``; ``Access`` is what a host's own ``auth`` dependency returns.
"""

from cosmos_models.api.app import ApiState, cosmos_lifespan, get_database
from cosmos_models.api.auth import Access, TokenStore
from cosmos_models.api.errors import Problem, add_exception_handlers
from cosmos_models.api.factory import create_app
from cosmos_models.api.routes import create_router

__all__ = [
    "Access",
    "ApiState",
    "Problem",
    "TokenStore",
    "add_exception_handlers",
    "cosmos_lifespan",
    "create_app",
    "create_router",
    "get_database",
]
