"""Live data for dashboards over HTTP: ``GET /stats`` and ``GET /events``.

``/events`` is one Server-Sent-Events stream of every unfinished run's state: a ``snapshot``
event first (all unfinished runs), then ``runs`` events with the runs whose status or latest
progress moved (a finished run once more, with its final state), ``removed`` with deleted run
ids, and ``stats`` (``/stats``'s body) every ``stats_interval``. A reconnecting client gets a new
snapshot, so no event id is needed. One ``RunFeed`` per app serves every client: it is read
through the app's ``AsyncDatabase`` while at least one client listens, and its changes are
copied to each client's queue; a client too slow to keep up is disconnected (its browser
reconnects to a snapshot).
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from cosmos_models.aio import AsyncDatabase
from cosmos_models.api.app import Database, state_of
from cosmos_models.api.errors import PROBLEM_RESPONSES
from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.errors import DatabaseError
from cosmos_models.models.readmodels import Page
from cosmos_models.models.status import RunStatus
from cosmos_models.services.queries import MAX_CURSOR_LENGTH, list_runs
from cosmos_models.services.run_feed import FeedChanges, RunFeed, RunState, run_states
from cosmos_models.services.stats import ActivityStats, activity_stats

# Messages a client may lag behind before it is disconnected.
CLIENT_QUEUE: Final = 256
KEEP_ALIVE_SECONDS: Final = 15.0
_STATES: Final = TypeAdapter(list[RunState])
log = logging.getLogger(__name__)


def sse_message(event: str, data: str) -> str:
    """One Server-Sent-Events message; ``data`` must be one line (JSON is)."""
    return f"event: {event}\ndata: {data}\n\n"


def _stats_json(stats: ActivityStats) -> str:
    return json.dumps({**asdict(stats), "at": stats.at.isoformat()})


class LiveHub:
    """Shares one ``RunFeed`` among the clients of ``/events`` of one app."""

    def __init__(
        self,
        database: AsyncDatabase,
        *,
        interval: float = 0.25,
        stats_interval: float = 2.0,
        retry_after: float = 1.0,
    ) -> None:
        """Serve ``database``'s runs, read every ``interval`` seconds while a client listens;
        ``stats`` every ``stats_interval``; a failed read again after ``retry_after``."""
        self.database = database
        self.retry_after = retry_after
        self.interval = interval
        self.stats_interval = stats_interval
        self._clients: set[asyncio.Queue[str | None]] = set()
        self._states: dict[str, RunState] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def stream(self) -> AsyncIterator[str]:
        """Yield one client's messages: the snapshot, then changes, until the hub closes."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._poll())
            await self._ready.wait()
            # Taken on the event loop, between two polls: the queue holds what follows it.
            yield sse_message("snapshot", _STATES.dump_json(list(self._states.values())).decode())
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield message
        finally:
            self._clients.discard(queue)

    def _send(self, message: str) -> None:
        for queue in list(self._clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too slow: end its stream (its browser reconnects and gets a new snapshot).
                self._clients.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    async def _poll(self) -> None:
        feed = RunFeed(self.database.sync_db)
        next_stats = 0.0
        try:
            while self._clients:
                try:
                    changes = await self.database.run_sync(_changes_of, feed)
                    stats = None
                    if time.monotonic() >= next_stats:
                        stats = await self.database.run_sync(activity_stats)
                        next_stats = time.monotonic() + self.stats_interval
                except DatabaseError:
                    # The database is away (a restart): keep the clients, try again.
                    await asyncio.sleep(self.retry_after)
                    continue
                except Exception:
                    # Not expected: said in the log; the clients keep their streams meanwhile.
                    log.exception("the dashboard's run feed failed to read; trying again")
                    await asyncio.sleep(self.retry_after)
                    continue
                self._apply(changes)
                if stats is not None:
                    self._send(sse_message("stats", _stats_json(stats)))
                await asyncio.sleep(self.interval)
        finally:
            # No client left (or closing): the next client starts from a new snapshot.
            self._task = None
            self._ready.clear()
            self._states.clear()

    def _apply(self, changes: FeedChanges) -> None:
        """Keep the snapshot current and send the changes (the first read is the snapshot)."""
        for state in changes.changed:
            if state.status.is_final:
                self._states.pop(state.id, None)
            else:
                self._states[state.id] = state
        for run_id in changes.removed:
            self._states.pop(run_id, None)
        if self._ready.is_set():
            if changes.changed:
                self._send(sse_message("runs", _STATES.dump_json(changes.changed).decode()))
            if changes.removed:
                self._send(sse_message("removed", json.dumps(changes.removed)))
        self._ready.set()

    async def close(self) -> None:
        """End every client's stream and stop polling (at application shutdown)."""
        for queue in list(self._clients):
            self._clients.discard(queue)
            queue.put_nowait(None)
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _changes_of(_db: DatabaseConnection, feed: RunFeed) -> FeedChanges:
    return feed.changes()


def hub_of(request: Request) -> LiveHub:
    """The app's hub, made on first use over the app's ``AsyncDatabase``."""
    settings = request.app.state.cosmos_dashboard
    if settings.hub is None:
        settings.hub = LiveHub(
            state_of(request).database,
            interval=settings.interval,
            stats_interval=settings.stats_interval,
        )
    hub: LiveHub = settings.hub
    return hub


# operationIds are the functions' names, like the API's (stable names for generated clients).
live_router = APIRouter(
    tags=["dashboard"],
    responses=PROBLEM_RESPONSES,
    generate_unique_id_function=lambda route: route.name,
)


@live_router.get("/stats", summary="Runs per status and progress events per second")
async def dashboard_stats(database: Database) -> dict[str, Any]:
    """Runs per status (every status) and progress events in the last minute, per second."""
    stats = await database.run_sync(activity_stats)
    body: dict[str, Any] = json.loads(_stats_json(stats))
    return body


@live_router.get(
    "/events",
    summary="Server-Sent Events: every unfinished run's state, then what moves",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_run_states(request: Request) -> StreamingResponse:
    """Stream ``snapshot``, ``runs``, ``removed`` and ``stats`` events (see the module)."""
    return StreamingResponse(
        hub_of(request).stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _states_page(
    db: DatabaseConnection,
    status: list[RunStatus] | None,
    model_type: str | None,
    limit: int,
    cursor: str | None,
) -> Page[RunState]:
    page = list_runs(db, status=status, model_type=model_type, limit=limit, cursor=cursor)
    return Page[RunState](items=run_states(db, page.items), next_cursor=page.next_cursor)


@live_router.get("/dashboard/runs", summary="One page of runs as the dashboard shows them")
async def list_run_states(
    database: Database,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    model_type: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None,
) -> Page[RunState]:
    """``GET /runs``'s page (same filters, newest first, same cursor) with each run's latest
    event: stage, percentage and message, also for finished runs."""
    return await database.run_sync(_states_page, status, model_type, limit, cursor)
