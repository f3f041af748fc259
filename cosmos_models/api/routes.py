"""The API's routes for prompts, runs and health; ``create_router`` assembles every route.

Handlers call the package's service functions through ``AsyncDatabase.run_sync`` (the same
path as the ``cosmos_models.aio`` twins): the event loop is never blocked, and validation,
errors and results are exactly the library's. JSON shapes are the library's read models
(``PromptRead``, ``RunRead``, ``RunDetail``, ``Page``), documented in the OpenAPI schema.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from cosmos_models.api.app import Database, state_of
from cosmos_models.api.auth import AccessDependency, write_guard
from cosmos_models.api.errors import PROBLEM_RESPONSES
from cosmos_models.api.streams import add_progress_routes
from cosmos_models.db.migrate import check_schema
from cosmos_models.models.prompt import PromptCreate, PromptRead, PromptUpdate
from cosmos_models.models.readmodels import Page, RunDetail
from cosmos_models.models.run import RunCreate, RunRead
from cosmos_models.models.status import RunStatus
from cosmos_models.services.editing import cancel_run, delete_prompt, delete_run, update_prompt
from cosmos_models.services.lifecycle import create_prompt, create_run, transition
from cosmos_models.services.queries import (
    MAX_CURSOR_LENGTH,
    get_prompt,
    get_run_detail,
    list_prompts,
    list_runs,
)

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1 to 1000).")]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="next_cursor of the previous page."),
]
Order = Annotated[Literal["newest", "oldest"], Query(description="By (created_at, id).")]
After = Annotated[datetime | None, Query(description="Created at or after (aware ISO-8601).")]
Before = Annotated[datetime | None, Query(description="Created before (aware ISO-8601).")]


def _links(parameter: str, operations: tuple[str, ...]) -> dict[str, Any]:
    return {
        operation: {"operationId": operation, "parameters": {parameter: "$response.body#/id"}}
        for operation in operations
    }


# OpenAPI links: where a created row's id goes next (clients and stateful fuzzing follow them).
PROMPT_LINKS: Final = {
    **_links("prompt_id", ("get_prompt", "update_prompt", "delete_prompt")),
    "create_run": {"operationId": "create_run", "requestBody": {"prompt_id": "$response.body#/id"}},
}
RUN_LINKS: Final = _links(
    "run_id",
    ("get_run", "transition_run", "cancel_run", "delete_run", "record_progress", "list_progress"),
)


class TransitionRequest(BaseModel):
    """Move a run to ``to``; ``expected_from`` turns a lost race into a 409."""

    to: RunStatus
    error_message: str | None = Field(default=None, description="Why (failed or cancelled).")
    expected_from: RunStatus | None = None


class CancelRequest(BaseModel):
    """Cancel a run; ``error_message`` says why."""

    error_message: str | None = None


class Health(BaseModel):
    """The service is up: the database answers and its schema is at ``revision`` (head)."""

    status: Literal["ok"] = "ok"
    revision: str
    read_only: bool = Field(description="True when no token may write (none configured).")


def _record_routes(router: APIRouter, write: Callable[..., Any]) -> None:
    guarded = [Depends(write)]

    @router.post(
        "/prompts",
        status_code=201,
        name="create_prompt",
        responses={201: {"links": PROMPT_LINKS}},
        dependencies=guarded,
        tags=["prompts"],
    )
    async def post_prompt(database: Database, prompt: PromptCreate) -> PromptRead:
        """Create a prompt (its id generated when absent)."""
        return await database.run_sync(create_prompt, prompt)

    @router.get("/prompts", name="list_prompts", tags=["prompts"])
    async def get_prompts(
        database: Database,
        *,
        model_type: Annotated[str | None, Query(max_length=100)] = None,
        created_after: After = None,
        created_before: Before = None,
        order: Order = "newest",
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[PromptRead]:
        """One page of prompts, newest first by default; follow ``next_cursor`` for more."""
        return await database.run_sync(
            list_prompts,
            model_type=model_type,
            created_after=created_after,
            created_before=created_before,
            order=order,
            limit=limit,
            cursor=cursor,
        )

    @router.get("/prompts/{prompt_id}", name="get_prompt", tags=["prompts"])
    async def get_one_prompt(database: Database, prompt_id: str) -> PromptRead:
        """One prompt."""
        return await database.run_sync(get_prompt, prompt_id)

    @router.patch(
        "/prompts/{prompt_id}", name="update_prompt", dependencies=guarded, tags=["prompts"]
    )
    async def patch_prompt(database: Database, prompt_id: str, changes: PromptUpdate) -> PromptRead:
        """Change the fields given (others keep their values)."""
        return await database.run_sync(
            update_prompt, prompt_id, changes.model_dump(exclude_unset=True)
        )

    @router.delete(
        "/prompts/{prompt_id}",
        name="delete_prompt",
        status_code=204,
        dependencies=guarded,
        tags=["prompts"],
    )
    async def remove_prompt(database: Database, prompt_id: str) -> Response:
        """Delete a prompt with its runs and their progress."""
        await database.run_sync(delete_prompt, prompt_id)
        return Response(status_code=204)

    @router.post(
        "/runs",
        status_code=201,
        name="create_run",
        responses={201: {"links": RUN_LINKS}},
        dependencies=guarded,
        tags=["runs"],
    )
    async def post_run(database: Database, run: RunCreate) -> RunRead:
        """Create a pending run of a prompt (``model_type`` copied from it when absent)."""
        return await database.run_sync(create_run, run)

    @router.get("/runs", name="list_runs", tags=["runs"])
    async def get_runs(
        database: Database,
        *,
        status: Annotated[list[RunStatus] | None, Query()] = None,
        model_type: Annotated[str | None, Query(max_length=100)] = None,
        prompt_id: Annotated[str | None, Query(max_length=255)] = None,
        created_after: After = None,
        created_before: Before = None,
        order: Order = "newest",
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[RunRead]:
        """One page of runs matching every filter given (``status`` may repeat)."""
        return await database.run_sync(
            list_runs,
            status=status,
            model_type=model_type,
            prompt_id=prompt_id,
            created_after=created_after,
            created_before=created_before,
            order=order,
            limit=limit,
            cursor=cursor,
        )

    @router.get("/runs/{run_id}", name="get_run", tags=["runs"])
    async def get_one_run(database: Database, run_id: str) -> RunDetail:
        """One run with its prompt's summary and its latest progress event."""
        return await database.run_sync(get_run_detail, run_id)

    @router.post(
        "/runs/{run_id}/transition", name="transition_run", dependencies=guarded, tags=["runs"]
    )
    async def post_transition(database: Database, run_id: str, move: TransitionRequest) -> RunRead:
        """Move a run along its lifecycle (409 if the lifecycle forbids it or a race lost)."""
        return await database.run_sync(
            transition,
            run_id,
            move.to,
            error_message=move.error_message,
            expected_from=move.expected_from,
        )

    @router.post("/runs/{run_id}/cancel", name="cancel_run", dependencies=guarded, tags=["runs"])
    async def post_cancel(
        database: Database, run_id: str, cancel: CancelRequest | None = None
    ) -> RunRead:
        """Cancel a run that is not finished (409 if it is)."""
        reason = None if cancel is None else cancel.error_message
        return await database.run_sync(cancel_run, run_id, error_message=reason)

    @router.delete(
        "/runs/{run_id}", name="delete_run", status_code=204, dependencies=guarded, tags=["runs"]
    )
    async def remove_run(database: Database, run_id: str) -> Response:
        """Delete a run with its progress (its prompt stays)."""
        await database.run_sync(delete_run, run_id)
        return Response(status_code=204)


def create_router(*, auth: AccessDependency | None = None) -> APIRouter:
    """Every route of the API, to mount in a host app (``app.include_router(...)``).

    ``auth``: the host's dependency returning an ``Access`` (default: ``COSMOS_API_TOKENS``).
    The host also installs ``cosmos_lifespan`` and ``add_exception_handlers``.
    """
    # operationIds are the route names (create_run, get_run…): stable for generated clients.
    router = APIRouter(
        responses=PROBLEM_RESPONSES, generate_unique_id_function=lambda route: route.name
    )
    write = write_guard(auth)
    _record_routes(router, write)
    add_progress_routes(router, write)

    @router.get("/health", name="health", tags=["health"])
    async def health(request: Request) -> Health:
        """200 when the database answers and its schema is at head, else 503."""
        state = state_of(request)
        revision = await state.database.run_sync(check_schema)
        return Health(revision=revision, read_only=auth is None and not state.tokens.entries)

    return router
