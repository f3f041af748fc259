"""Async twins of the service functions: each is the sync function itself, awaited in a greenlet.

``twin(fn)`` makes ``async def name(adb, *args, **kwargs)`` with ``fn``'s name, docstring and
parameters (``functools.wraps``; typed with ``ParamSpec``, so ``aio.create_run(adb, …)`` takes
exactly what ``create_run(db, …)`` takes). Statement building, validation, result mapping and
error translation are the sync function's: there is no second copy. Adding a twin is one line
in the table below (and its name in ``cosmos_models.aio.__all__``).
"""

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

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
) -> Callable[Concatenate[AsyncDatabase, P], Coroutine[Any, Any, R]]:
    """The async twin of the service function ``fn`` (its first parameter is ``db``).

    The twin raises ``ValueError`` naming ``db`` unless given an ``AsyncDatabase``, and then
    exactly what ``fn`` raises.
    """

    @functools.wraps(fn)
    async def run(adb: AsyncDatabase, /, *args: P.args, **kwargs: P.kwargs) -> R:
        sync_view(adb)
        return await adb.run_sync(fn, *args, **kwargs)

    return run


# The table: one line per service function.
create_prompt = twin(lifecycle.create_prompt)
create_run = twin(lifecycle.create_run)
transition = twin(lifecycle.transition)
transition_runs = twin(batch_transitions.transition_runs)
claim_next_run = twin(claims.claim_next_run)
claim_next_runs = twin(claims.claim_next_runs)
complete_and_claim_runs = twin(handoff.complete_and_claim_runs)
heartbeat = twin(lifecycle.heartbeat)
reap_stale_runs = twin(lifecycle.reap_stale_runs)
record_progress = twin(tracking.record_progress)
record_progress_batch = twin(tracking.record_progress_batch)
latest_progress = twin(progress_queries.latest_progress)
progress_since = twin(progress_queries.progress_since)
get_run = twin(queries.get_run)
get_run_detail = twin(queries.get_run_detail)
list_prompts = twin(queries.list_prompts)
list_runs = twin(queries.list_runs)
get_prompt = twin(queries.get_prompt)
update_prompt = twin(editing.update_prompt)
delete_prompt = twin(editing.delete_prompt)
delete_run = twin(editing.delete_run)
cancel_run = twin(editing.cancel_run)
check_schema = twin(migrate.check_schema)
create_app_tables = twin(apps.create_app_tables)
