"""Who may write: bearer tokens from ``COSMOS_API_TOKENS``, or the host app's own dependency.

``COSMOS_API_TOKENS`` lists tokens separated by commas, each ``rw:TOKEN`` (read-write) or
``ro:TOKEN`` (read-only). Only their SHA-256 digests are kept; a presented token is hashed and
compared with every stored digest with ``hmac.compare_digest``, so neither how much of it
matches nor which entry it matches changes the work done. Tokens are never logged or echoed.
Reads are open; writes need a read-write token (none: 401, wrong: 401, read-only: 403). With no
token configured the API is read-only (writes: 403) and says so at startup.
"""

import enum
import hashlib
import hmac
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cosmos_models.errors import InvalidArgumentError

ENV_VAR: Final = "COSMOS_API_TOKENS"
log = logging.getLogger("cosmos_models.api")


class Access(enum.StrEnum):
    """What a caller may do: nothing beyond reading, read only (explicitly), or read and write."""

    ANONYMOUS = "anonymous"
    READ = "read"
    WRITE = "write"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class TokenStore:
    """The configured tokens as digests with their access; no token is kept in clear."""

    entries: tuple[tuple[bytes, Access], ...]

    @classmethod
    def parse(cls, text: str | None) -> "TokenStore":
        """Parse ``rw:TOKEN,ro:TOKEN`` (``None`` or empty: no token).

        Raises ``InvalidArgumentError`` naming the entry's position, never the token.
        """
        if text is not None and not isinstance(text, str):
            raise InvalidArgumentError(f"{ENV_VAR}: must be a string, got {type(text).__name__}")
        entries: list[tuple[bytes, Access]] = []
        positions: dict[bytes, int] = {}  # where each token was first listed
        for position, item in enumerate((text or "").split(","), start=1):
            if not item.strip():
                continue
            scope, _, token = item.strip().partition(":")
            if scope not in ("rw", "ro") or len(token) < 16:
                raise InvalidArgumentError(
                    f"{ENV_VAR}: entry {position} must be 'rw:TOKEN' or 'ro:TOKEN' with a token "
                    "of at least 16 characters"
                )
            digest = _digest(token)
            if digest in positions:
                # Listed as ro and as rw, the token would get the broader access silently.
                raise InvalidArgumentError(
                    f"{ENV_VAR}: entries {positions[digest]} and {position} hold the same token; "
                    "list each token once, with the access it is to have"
                )
            positions[digest] = position
            entries.append((digest, Access.WRITE if scope == "rw" else Access.READ))
        return cls(tuple(entries))

    @classmethod
    def from_environment(cls) -> "TokenStore":
        """The tokens of ``COSMOS_API_TOKENS``; raises like ``parse``."""
        return cls.parse(os.environ.get(ENV_VAR))

    def access_of(self, token: str) -> Access | None:
        """The access a presented token grants, or None; constant work for every token."""
        presented = _digest(token)
        granted: Access | None = None
        for digest, access in self.entries:  # every entry is compared: no early exit
            if hmac.compare_digest(presented, digest):
                granted = access
        return granted


AccessDependency = Callable[..., Access | Awaitable[Access]]
"""A host app's own authentication: a FastAPI dependency returning the caller's ``Access``."""

_bearer = HTTPBearer(auto_error=False, description="A token from COSMOS_API_TOKENS (rw: or ro:).")


async def token_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Access:
    """The access of the request's bearer token (401 for a token that is not configured)."""
    if credentials is None:
        return Access.ANONYMOUS
    store: TokenStore = request.state.cosmos.tokens
    access = store.access_of(credentials.credentials)
    if access is None:
        raise HTTPException(
            401,
            "the bearer token is not valid",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return access


def write_guard(access_dependency: AccessDependency | None = None) -> Callable[..., Any]:
    """The dependency every write route takes: 401 without credentials, 403 when read-only."""
    source = access_dependency or token_access

    async def require_write(request: Request, access: Annotated[Any, Depends(source)]) -> None:
        if inspect.isawaitable(access):  # pragma: no cover - FastAPI awaits async dependencies
            access = await access
        if access is Access.WRITE:
            return
        if access_dependency is None and not request.state.cosmos.tokens.entries:
            raise HTTPException(403, "this API is read-only: no COSMOS_API_TOKENS configured")
        if access is Access.READ:
            raise HTTPException(403, "this token may read but not write")
        raise HTTPException(
            401, "writing needs a read-write bearer token", {"WWW-Authenticate": "Bearer"}
        )

    return require_write
