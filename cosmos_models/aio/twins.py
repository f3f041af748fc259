"""Async twins of the service functions: each is the sync function itself, awaited in a greenlet.

``twin(fn)`` makes ``async def name(adb, *args, **kwargs)`` with ``fn``'s name, docstring and
parameters (``functools.wraps``; typed with ``ParamSpec``, so ``aio.create_run(adb, …)`` takes
exactly what ``create_run(db, …)`` takes). Statement building, validation, result mapping and
error translation are the sync function's: there is no second copy. Adding a twin is one line
in the table below (and its name in ``cosmos_models.aio.__all__``).
"""

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from cosmos_models.aio.database import AsyncDatabase, sync_view
from cosmos_models.db import apps, migrate
from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.services import (
    batch_transitions,
    claims,
    editing,
    handoff,
    lifecycle,
    progress_queries,
    queries,
    tracking,
)

P = ParamSpec("P")
R = TypeVar("R")


def twin(
    fn: Callable[Concatenate[DatabaseConnection, P], R],
    short: Literal["read", "write"] | None = None,
) -> Callable[Concatenate[AsyncDatabase, P], Coroutine[Any, Any, R]]:
    """The async twin of the service function ``fn`` (its first parameter is ``db``).

    ``short``: ``fn`` is a bounded read (idempotent) or a bounded write in one transaction, which
    ``AsyncDatabase.run_short`` may start on the loop thread. The twin raises ``ValueError``
    naming ``db`` unless given an ``AsyncDatabase``, and then exactly what ``fn`` raises.
    """
    write = short == "write"

    @functools.wraps(fn)
    async def run(adb: AsyncDatabase, /, *args: P.args, **kwargs: P.kwargs) -> R:
        sync_view(adb)
        if short is None:
            return await adb.run_sync(fn, *args, **kwargs)
        return await adb.run_short(write, fn, *args, **kwargs)

    return run


# The table: one line per service function. "read": a read of bounded size; "write": a write of
# bounded size in one transaction (both may start on the loop thread on SQLite, see inline.py).
create_prompt = twin(lifecycle.create_prompt, "write")
create_run = twin(lifecycle.create_run, "write")
transition = twin(lifecycle.transition, "write")
transition_runs = twin(batch_transitions.transition_runs)
claim_next_run = twin(claims.claim_next_run, "write")
claim_next_runs = twin(claims.claim_next_runs, "write")
complete_and_claim_runs = twin(handoff.complete_and_claim_runs, "write")
heartbeat = twin(lifecycle.heartbeat, "write")
reap_stale_runs = twin(lifecycle.reap_stale_runs)
record_progress = twin(tracking.record_progress, "write")
record_progress_batch = twin(tracking.record_progress_batch)
latest_progress = twin(progress_queries.latest_progress, "read")
progress_since = twin(progress_queries.progress_since, "read")
get_run = twin(queries.get_run, "read")
get_run_detail = twin(queries.get_run_detail, "read")
list_prompts = twin(queries.list_prompts, "read")
list_runs = twin(queries.list_runs, "read")
get_prompt = twin(queries.get_prompt, "read")
update_prompt = twin(editing.update_prompt, "write")
delete_prompt = twin(editing.delete_prompt)
delete_run = twin(editing.delete_run)
cancel_run = twin(editing.cancel_run, "write")
check_schema = twin(migrate.check_schema)
create_app_tables = twin(apps.create_app_tables)
