"""Progress routes: post one event or a batch, list a run's events, and a live SSE stream.

``GET /runs/{id}/events`` sends each event as ``id: <seq>``, ``event: progress``, ``data:
<ProgressRead JSON>``. A client that reconnects sends ``Last-Event-ID`` (the last seq it got)
and the stream resumes after it, without a gap or a duplicate (``follow_progress``'s cursor).
An idle stream sends a comment every ``keepalive`` seconds; once its run is final and every
event was sent, it sends ``event: end`` (``data``: the run) and closes.
"""

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from cosmos_models.aio import AsyncDatabase, follow_progress
from cosmos_models.api.app import Database, state_of
from cosmos_models.errors import InvalidArgumentError, RunNotFoundError
from cosmos_models.models.checks import MAX_INT, MAX_SEQ
from cosmos_models.models.progress import ProgressCreate, ProgressRead
from cosmos_models.models.run import RunRead
from cosmos_models.services.common import MAX_PAGE
from cosmos_models.services.progress_queries import progress_since
from cosmos_models.services.queries import get_run
from cosmos_models.services.tracking import record_progress, record_progress_batch

EVENT_STREAM: Final = "text/event-stream"
# One request's batch: about 2 MB of JSON, ~0.1 s to ingest; larger batches are split by the
# client (the all-or-nothing guarantee holds per request).
MAX_BATCH_EVENTS: Final = 10_000


class ProgressPost(BaseModel):
    """One progress event of the run in the path; ``timestamp`` defaults to now (UTC)."""

    stage: str
    percentage: float = Field(description="0 to 100.")
    message: str = ""
    timestamp: datetime | None = Field(default=None, description="Aware ISO-8601 (default: now).")


class Recorded(BaseModel):
    """How many events a batch recorded (all of them, or none with an error)."""

    recorded: int


def _sse(event: str, data: str, event_id: int | None = None) -> str:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {event}\ndata: {data}\n\n"


def _resume_point(last_event_id: str | None) -> int:
    """The seq after which to resume: ``Last-Event-ID`` (a seq), else 0 (from the first)."""
    if last_event_id is None:
        return 0
    text = last_event_id.strip()
    if not text.isdecimal() or not text.isascii() or int(text) > MAX_INT:
        raise InvalidArgumentError("Last-Event-ID: must be the seq of an event (an integer ≥ 0)")
    return min(int(text), MAX_SEQ)  # past any seq: nothing more to send but the end


async def _stream(
    database: AsyncDatabase, run_id: str, after: int, keepalive: float
) -> AsyncIterator[str]:
    last = after
    # A run already final needs no idle wait: its events, then the end (a stream resumed after
    # the run ended would otherwise wait one keep-alive interval for nothing).
    try:
        run = await database.run_sync(get_run, run_id)
    except RunNotFoundError:
        return
    finished: RunRead | None = run if run.status.is_final else None
    while True:
        # Once the run is final, one more pass without waiting sends what committed between
        # the last idle wait and the status read (a final run takes no more events).
        wait = 0.0 if finished is not None else keepalive
        events = follow_progress(database, [run_id], after={run_id: last}, idle_timeout=wait)
        try:
            async for event in events:
                last = event.seq
                yield _sse("progress", event.model_dump_json(), event.seq)
        finally:
            await events.aclose()
        if finished is not None:
            yield _sse("end", finished.model_dump_json())
            return
        try:
            run = await database.run_sync(get_run, run_id)
        except RunNotFoundError:
            return  # deleted meanwhile: nothing more will come
        if run.status.is_final:
            finished = run
        else:
            yield ": keep-alive\n\n"


def add_progress_routes(router: APIRouter, write: Callable[..., Any]) -> None:
    """Add the progress routes to ``router``; ``write`` guards the routes that write."""
    guarded = [Depends(write)]

    @router.post(
        "/runs/{run_id}/progress",
        name="record_progress",
        status_code=201,
        dependencies=guarded,
        tags=["progress"],
    )
    async def post_progress(database: Database, run_id: str, event: ProgressPost) -> ProgressRead:
        """Record one progress event (409 when the run is finished)."""
        return await database.run_sync(
            record_progress,
            run_id,
            event.stage,
            event.percentage,
            event.message,
            timestamp=event.timestamp,
        )

    @router.post(
        "/progress",
        name="record_progress_batch",
        status_code=201,
        dependencies=guarded,
        tags=["progress"],
    )
    async def post_progress_batch(
        database: Database,
        events: Annotated[list[ProgressCreate], Body(max_length=MAX_BATCH_EVENTS)],
    ) -> Recorded:
        """Record many events (of one run or many, at most 10,000): all of them, or none."""
        count = await database.run_sync(record_progress_batch, events)
        return Recorded(recorded=count)

    @router.get("/runs/{run_id}/progress", name="list_progress", tags=["progress"])
    async def get_progress(
        database: Database,
        run_id: str,
        after: Annotated[int, Query(ge=0, le=MAX_INT, description="The last seq seen.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> list[ProgressRead]:
        """A run's events with ``seq > after``, in seq order."""
        return await database.run_sync(progress_since, run_id, after, limit)

    @router.get(
        "/runs/{run_id}/events",
        name="stream_events",
        tags=["progress"],
        response_class=StreamingResponse,
        responses={200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}}}},
    )
    async def get_events(
        request: Request,
        database: Database,
        run_id: str,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Server-Sent Events of a run's progress, resuming after ``Last-Event-ID``."""
        after = _resume_point(last_event_id)
        await database.run_sync(get_run, run_id)  # 404 before the stream starts
        keepalive = state_of(request).keepalive
        return StreamingResponse(
            _stream(database, run_id, after, keepalive),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
