"""One exception handler family: every error becomes ``application/problem+json`` (RFC 9457).

Client errors are ``CosmosModelsError`` subclasses (or pydantic's ``ValidationError`` for model
fields) and map to one status each: validation 422, not found 404, conflicts (a duplicate, an
illegal or lost transition, a finished run, another worker's run) 409, database unavailable or
not migrated 503. Bodies never carry a driver's message, a URL or the input values sent: a
database error says only that the database is unavailable, and validation errors list each
field's location and problem.
"""

from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from cosmos_models.errors import (
    CosmosModelsError,
    DatabaseError,
    IntegrityViolation,
    InvalidArgumentError,
    InvalidTransitionError,
    MigrationError,
    NotFoundError,
    RunFinishedError,
    TransitionConflictError,
    WorkerMismatchError,
)

PROBLEM_JSON: Final = "application/problem+json"


class FieldProblem(BaseModel):
    """One invalid field: where it is (``["body", "percentage"]``) and what is wrong with it."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An error response (RFC 9457 problem details); ``errors`` lists invalid fields (422)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = Field(default=None)


_TITLES: Final = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    500: "Internal error",
    503: "Database unavailable",
}

PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {
        "description": title,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, title in _TITLES.items()
    if status not in (405, 500)
}
"""The error responses every operation documents (OpenAPI), all as problem+json."""


def problem(
    status: int,
    detail: str,
    errors: list[FieldProblem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response with ``status``, its title and ``detail``."""
    body = Problem(title=_TITLES.get(status, "Error"), status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers) if headers else None,
    )


def _field_problems(errors: Any) -> list[FieldProblem]:
    # The input values ("input", "ctx") are left out: they may be large, or a secret.
    return [
        FieldProblem(
            loc=[part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            msg=str(error.get("msg", "")),
            type=str(error.get("type", "")),
        )
        for error in errors
    ]


def status_of(exc: CosmosModelsError) -> int:
    """The HTTP status of one of the package's errors."""
    if isinstance(exc, InvalidArgumentError):
        return 422
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(
        exc,
        IntegrityViolation
        | InvalidTransitionError
        | TransitionConflictError
        | RunFinishedError
        | WorkerMismatchError,
    ):
        return 409
    return 503  # DatabaseError, MigrationError: the service cannot answer now


def _detail(exc: CosmosModelsError, status: int) -> str:
    if isinstance(exc, IntegrityViolation):
        # The driver's text names constraints and values: say what happened, not how.
        return "the database refused the write: a duplicate id or a reference to a missing row"
    if isinstance(exc, DatabaseError) and status == 503:
        return "the database cannot be reached or refused the request; try again later"
    if isinstance(exc, MigrationError):
        return str(exc)  # names the command to run; carries no URL
    return str(exc) if status != 503 else "the service is unavailable"


async def _cosmos_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CosmosModelsError)
    status = status_of(exc)
    errors = _argument_problems(exc) if isinstance(exc, InvalidArgumentError) else None
    return problem(status, _detail(exc, status), errors)


def _argument_problems(exc: InvalidArgumentError) -> list[FieldProblem]:
    """The ``errors`` of an argument error: its message names the argument first ("cursor: …",
    "Last-Event-ID: …"), which becomes the ``loc``; a message naming none has an empty one."""
    text = str(exc)
    name, separator, message = text.partition(": ")
    if not separator or " " in name:
        return [FieldProblem(loc=[], msg=text, type="value_error")]
    return [FieldProblem(loc=[name], msg=message, type="value_error")]


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(422, "the request is not valid", _field_problems(exc.errors()))


async def _model_validation(_request: Request, exc: Exception) -> JSONResponse:
    # Raised by a service validating a model field: the location is the field, in the body.
    assert isinstance(exc, ValidationError)
    problems = _field_problems(exc.errors())
    for item in problems:
        item.loc = ["body", *item.loc]
    return problem(422, "the request is not valid", problems)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    return problem(500, "an unexpected error occurred")


def add_exception_handlers(app: FastAPI) -> None:
    """Install the handlers on ``app`` and document ``Problem`` in its OpenAPI schema.

    A host app mounting ``create_router()`` calls this too.
    """
    app.add_exception_handler(CosmosModelsError, _cosmos_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _model_validation)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    _document_problems(app)


def _document_problems(app: FastAPI) -> None:
    """Put the ``Problem`` schema into the OpenAPI components the error responses refer to."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in (
                Problem.model_json_schema(ref_template="#/components/schemas/{model}")
                .pop("$defs", {})
                .items()
            ):
                components.setdefault(name, definition)
            components["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components["Problem"].pop("$defs", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
