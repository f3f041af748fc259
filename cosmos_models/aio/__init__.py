"""cosmos_models.aio: the service functions for asyncio code, with the sync side's semantics.

``async with AsyncDatabase(url) as adb: run = await aio.get_run(adb, run_id)``. Every service
function of ``cosmos_models`` has a twin here taking an ``AsyncDatabase`` instead of a
``DatabaseConnection`` (same arguments, results and exceptions), plus ``follow_progress`` as an
async iterator and ``init_database``.
"""

from cosmos_models.aio.database import AsyncDatabase, init_database
from cosmos_models.aio.follow import follow_progress
from cosmos_models.aio.twins import (
    cancel_run,
    check_schema,
    claim_next_run,
    claim_next_runs,
    complete_and_claim_runs,
    create_app_tables,
    create_prompt,
    create_run,
    delete_prompt,
    delete_run,
    get_prompt,
    get_run,
    get_run_detail,
    heartbeat,
    latest_progress,
    list_prompts,
    list_runs,
    progress_since,
    reap_stale_runs,
    record_progress,
    record_progress_batch,
    transition,
    transition_runs,
    update_prompt,
)

__all__ = [
    "AsyncDatabase",
    "cancel_run",
    "check_schema",
    "claim_next_run",
    "claim_next_runs",
    "complete_and_claim_runs",
    "create_app_tables",
    "create_prompt",
    "create_run",
    "delete_prompt",
    "delete_run",
    "follow_progress",
    "get_prompt",
    "get_run",
    "get_run_detail",
    "heartbeat",
    "init_database",
    "latest_progress",
    "list_prompts",
    "list_runs",
    "progress_since",
    "reap_stale_runs",
    "record_progress",
    "record_progress_batch",
    "transition",
    "transition_runs",
    "update_prompt",
]
