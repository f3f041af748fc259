"""Every public function refuses wrong-shaped arguments with a ``ValueError`` naming the argument.

That ``ValueError`` is an ``InvalidArgumentError`` (a ``CosmosModelsError``) or, for a field of
the Create/Update models, pydantic's ``ValidationError``.

One table for the whole API: never a raw ``TypeError``, ``AttributeError``, ``OverflowError``,
``RecursionError``, ``UnicodeEncodeError`` or driver error, and nothing written.
"""

import inspect
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError

import cosmos_models
from cosmos_models import (
    DatabaseConnection,
    JsonFilter,
    app_metadata,
    app_tables,
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
    follow_progress,
    get_prompt,
    get_run,
    get_run_detail,
    heartbeat,
    init_database,
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
from cosmos_models.errors import InvalidArgumentError
from cosmos_models.services.common import MAX_PAGE
from tests.factories import at, new_prompt

NAIVE = datetime(2025, 1, 4, 12, 0)
HUGE = 10**30
PROMPT = {"model_type": "transfer", "prompt_text": "x", "inputs": {}, "parameters": {}}
A_FILTER = JsonFilter("outputs", ("k",), "==", 1)
FROM: dict[str, Any] = {"expected_from": "pending"}

Call = Callable[[DatabaseConnection, str, str], object]

# (function, argument that must be named, call(db, prompt_id, run_id)). Every call below would
# otherwise reach the database (or Python's own errors) with the wrong value.
CASES: list[tuple[str, str, Call]] = [
    ("create_prompt", "db", lambda db, p, r: create_prompt("sqlite://", PROMPT)),  # type: ignore[arg-type]
    ("create_prompt", "db", lambda db, p, r: create_prompt(None, PROMPT)),  # type: ignore[arg-type]
    ("create_prompt", "prompt", lambda db, p, r: create_prompt(db, "a prompt")),  # type: ignore[arg-type]
    ("create_prompt", "prompt", lambda db, p, r: create_prompt(db, None)),  # type: ignore[arg-type]
    ("create_prompt", "prompt", lambda db, p, r: create_prompt(db, b"x")),  # type: ignore[arg-type]
    ("create_prompt", "prompt", lambda db, p, r: create_prompt(db, [PROMPT])),  # type: ignore[arg-type]
    (
        "create_prompt",
        "model_type",
        lambda db, p, r: create_prompt(db, {**PROMPT, "model_type": 5}),
    ),
    ("create_prompt", "now", lambda db, p, r: create_prompt(db, PROMPT, now=NAIVE)),
    ("create_prompt", "now", lambda db, p, r: create_prompt(db, PROMPT, now="2025-01-04")),  # type: ignore[arg-type]
    ("create_prompt", "now", lambda db, p, r: create_prompt(db, PROMPT, now=5)),  # type: ignore[arg-type]
    (
        "create_prompt",
        "now",
        lambda db, p, r: create_prompt(
            db, PROMPT, now=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
        ),
    ),
    ("create_run", "db", lambda db, p, r: create_run({}, p)),  # type: ignore[arg-type]
    ("create_run", "run", lambda db, p, r: create_run(db, 5)),  # type: ignore[arg-type]
    ("create_run", "run", lambda db, p, r: create_run(db, None)),  # type: ignore[arg-type]
    ("create_run", "run", lambda db, p, r: create_run(db, p.encode())),  # type: ignore[arg-type]
    ("create_run", "run", lambda db, p, r: create_run(db, [p])),  # type: ignore[arg-type]
    ("create_run", "prompt_id", lambda db, p, r: create_run(db, "\ud800")),
    ("create_run", "prompt_id", lambda db, p, r: create_run(db, "")),
    ("create_run", "outputs", lambda db, p, r: create_run(db, {"prompt_id": p, "outputs": "x"})),
    ("create_run", "now", lambda db, p, r: create_run(db, p, now=NAIVE)),
    ("get_prompt", "db", lambda db, p, r: get_prompt(None, p)),  # type: ignore[arg-type]
    ("get_prompt", "prompt_id", lambda db, p, r: get_prompt(db, 5)),  # type: ignore[arg-type]
    ("get_prompt", "prompt_id", lambda db, p, r: get_prompt(db, "a\x00")),
    ("update_prompt", "db", lambda db, p, r: update_prompt("x", p, {})),  # type: ignore[arg-type]
    ("update_prompt", "prompt_id", lambda db, p, r: update_prompt(db, None, {})),  # type: ignore[arg-type]
    ("update_prompt", "changes", lambda db, p, r: update_prompt(db, p, "x")),  # type: ignore[arg-type]
    ("update_prompt", "changes", lambda db, p, r: update_prompt(db, p, [("a", 1)])),  # type: ignore[arg-type]
    ("update_prompt", "prompt_text", lambda db, p, r: update_prompt(db, p, {"prompt_text": " "})),
    ("update_prompt", "prompt_text", lambda db, p, r: update_prompt(db, p, {"prompt_text": None})),
    ("update_prompt", "inputs", lambda db, p, r: update_prompt(db, p, {"inputs": []})),
    ("update_prompt", "id", lambda db, p, r: update_prompt(db, p, {"id": "other"})),
    ("delete_prompt", "db", lambda db, p, r: delete_prompt(5, p)),  # type: ignore[arg-type]
    ("delete_prompt", "prompt_id", lambda db, p, r: delete_prompt(db, [p])),  # type: ignore[arg-type]
    ("delete_run", "db", lambda db, p, r: delete_run(db.url, r)),  # type: ignore[arg-type]
    ("delete_run", "run_id", lambda db, p, r: delete_run(db, r.encode())),  # type: ignore[arg-type]
    ("cancel_run", "db", lambda db, p, r: cancel_run(None, r)),  # type: ignore[arg-type]
    ("cancel_run", "run_id", lambda db, p, r: cancel_run(db, 5)),  # type: ignore[arg-type]
    ("cancel_run", "error_message", lambda db, p, r: cancel_run(db, r, error_message=" ")),
    ("cancel_run", "error_message", lambda db, p, r: cancel_run(db, r, error_message=5)),  # type: ignore[arg-type]
    ("cancel_run", "now", lambda db, p, r: cancel_run(db, r, now=NAIVE)),
    ("check_schema", "db", lambda db, p, r: check_schema("sqlite://")),  # type: ignore[arg-type]
    ("app_tables", "metadata", lambda db, p, r: app_tables(None)),  # type: ignore[arg-type]
    ("create_app_tables", "db", lambda db, p, r: create_app_tables(None, app_metadata())),  # type: ignore[arg-type]
    ("create_app_tables", "metadata", lambda db, p, r: create_app_tables(db, {})),  # type: ignore[arg-type]
    ("transition", "db", lambda db, p, r: transition(5, r, "failed")),  # type: ignore[arg-type]
    ("transition", "run_id", lambda db, p, r: transition(db, 5, "failed")),  # type: ignore[arg-type]
    ("transition", "run_id", lambda db, p, r: transition(db, None, "failed")),  # type: ignore[arg-type]
    ("transition", "run_id", lambda db, p, r: transition(db, r.encode(), "failed")),  # type: ignore[arg-type]
    ("transition", "run_id", lambda db, p, r: transition(db, "rs_\ud800", "failed")),
    ("transition", "run_id", lambda db, p, r: transition(db, "rs_\x00", "failed")),
    ("transition", "to", lambda db, p, r: transition(db, r, 5)),  # type: ignore[arg-type]
    ("transition", "to", lambda db, p, r: transition(db, r, None)),  # type: ignore[arg-type]
    ("transition", "to", lambda db, p, r: transition(db, r, ["failed"])),  # type: ignore[arg-type]
    ("transition", "to", lambda db, p, r: transition(db, r, "bogus")),
    (
        "transition",
        "expected_from",
        lambda db, p, r: transition(db, r, "failed", expected_from=5),  # type: ignore[arg-type]
    ),
    (
        "transition",
        "error_message",
        lambda db, p, r: transition(db, r, "failed", error_message=b"x"),  # type: ignore[arg-type]
    ),
    (
        "transition",
        "error_message",
        lambda db, p, r: transition(db, r, "failed", error_message="\udc00"),
    ),
    ("transition", "now", lambda db, p, r: transition(db, r, "failed", now=NAIVE)),
    ("transition_runs", "db", lambda db, p, r: transition_runs(None, [r], "failed", **FROM)),  # type: ignore[arg-type]
    ("transition_runs", "run_ids", lambda db, p, r: transition_runs(db, r, "failed", **FROM)),
    ("transition_runs", "run_ids", lambda db, p, r: transition_runs(db, None, "failed", **FROM)),  # type: ignore[arg-type]
    ("transition_runs", "run_ids", lambda db, p, r: transition_runs(db, [5], "failed", **FROM)),  # type: ignore[list-item]
    ("transition_runs", "run_ids", lambda db, p, r: transition_runs(db, {r: 1}, "failed", **FROM)),
    (
        "transition_runs",
        "run_ids",
        lambda db, p, r: transition_runs(db, ["\ud800"], "failed", **FROM),
    ),
    ("transition_runs", "run_ids", lambda db, p, r: transition_runs(db, [r, r], "failed", **FROM)),
    (
        "transition_runs",
        "run_ids",
        lambda db, p, r: transition_runs(db, [r] * 1001, "cancelled", **FROM),
    ),
    ("transition_runs", "to", lambda db, p, r: transition_runs(db, [r], 5, **FROM)),  # type: ignore[arg-type]
    ("transition_runs", "to", lambda db, p, r: transition_runs(db, [r], "bogus", **FROM)),
    (
        "transition_runs",
        "expected_from",
        lambda db, p, r: transition_runs(db, [r], "failed", expected_from=None),
    ),  # type: ignore[arg-type]
    (
        "transition_runs",
        "expected_from",
        lambda db, p, r: transition_runs(db, [r], "failed", expected_from=[]),
    ),  # type: ignore[arg-type]
    (
        "transition_runs",
        "error_message",
        lambda db, p, r: transition_runs(db, [r], "failed", error_message=b"x", **FROM),
    ),  # type: ignore[arg-type]
    (
        "transition_runs",
        "error_message",
        lambda db, p, r: transition_runs(db, [r], "running", error_message="x", **FROM),
    ),
    (
        "transition_runs",
        "now",
        lambda db, p, r: transition_runs(db, [r], "failed", now=NAIVE, **FROM),
    ),
    ("claim_next_run", "db", lambda db, p, r: claim_next_run("db", "w")),  # type: ignore[arg-type]
    ("claim_next_run", "worker_id", lambda db, p, r: claim_next_run(db, 5)),  # type: ignore[arg-type]
    ("claim_next_run", "worker_id", lambda db, p, r: claim_next_run(db, None)),  # type: ignore[arg-type]
    ("claim_next_run", "worker_id", lambda db, p, r: claim_next_run(db, b"w")),  # type: ignore[arg-type]
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", "transfer")),
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", b"transfer")),  # type: ignore[arg-type]
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", 5)),  # type: ignore[arg-type]
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", [5])),  # type: ignore[list-item]
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", {"transfer": 1})),
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", ["\ud800"])),
    ("claim_next_run", "model_types", lambda db, p, r: claim_next_run(db, "w", ["a\x00"])),
    ("claim_next_run", "to", lambda db, p, r: claim_next_run(db, "w", to=5)),  # type: ignore[arg-type]
    ("claim_next_run", "to", lambda db, p, r: claim_next_run(db, "w", to="completed")),
    ("claim_next_run", "now", lambda db, p, r: claim_next_run(db, "w", now=NAIVE)),
    ("claim_next_runs", "db", lambda db, p, r: claim_next_runs(None, "w")),  # type: ignore[arg-type]
    ("claim_next_runs", "worker_id", lambda db, p, r: claim_next_runs(db, "")),
    ("claim_next_runs", "worker_id", lambda db, p, r: claim_next_runs(db, 7)),  # type: ignore[arg-type]
    ("claim_next_runs", "model_types", lambda db, p, r: claim_next_runs(db, "w", "transfer")),
    ("claim_next_runs", "model_types", lambda db, p, r: claim_next_runs(db, "w", [])),
    ("claim_next_runs", "model_types", lambda db, p, r: claim_next_runs(db, "w", [None])),  # type: ignore[list-item]
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=0)),
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=-1)),
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=1001)),
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=HUGE)),
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=True)),  # type: ignore[arg-type]
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit=2.0)),  # type: ignore[arg-type]
    ("claim_next_runs", "limit", lambda db, p, r: claim_next_runs(db, "w", limit="2")),  # type: ignore[arg-type]
    ("claim_next_runs", "to", lambda db, p, r: claim_next_runs(db, "w", to="pending")),
    ("claim_next_runs", "to", lambda db, p, r: claim_next_runs(db, "w", to=None)),  # type: ignore[arg-type]
    ("claim_next_runs", "now", lambda db, p, r: claim_next_runs(db, "w", now=NAIVE)),
    ("claim_next_runs", "now", lambda db, p, r: claim_next_runs(db, "w", now="2025-01-01")),  # type: ignore[arg-type]
    ("complete_and_claim_runs", "db", lambda db, p, r: complete_and_claim_runs(None, "w", [r])),  # type: ignore[arg-type]
    ("complete_and_claim_runs", "worker_id", lambda db, p, r: complete_and_claim_runs(db, "", [r])),
    ("complete_and_claim_runs", "worker_id", lambda db, p, r: complete_and_claim_runs(db, 7, [r])),  # type: ignore[arg-type]
    ("complete_and_claim_runs", "run_ids", lambda db, p, r: complete_and_claim_runs(db, "w", r)),
    ("complete_and_claim_runs", "run_ids", lambda db, p, r: complete_and_claim_runs(db, "w", None)),  # type: ignore[arg-type]
    ("complete_and_claim_runs", "run_ids", lambda db, p, r: complete_and_claim_runs(db, "w", [5])),  # type: ignore[list-item]
    (
        "complete_and_claim_runs",
        "run_ids",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r, r]),
    ),
    (
        "complete_and_claim_runs",
        "run_ids",
        lambda db, p, r: complete_and_claim_runs(db, "w", [f"rs_{i}" for i in range(1001)]),
    ),
    (
        "complete_and_claim_runs",
        "model_types",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], "transfer"),
    ),
    (
        "complete_and_claim_runs",
        "model_types",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], []),
    ),
    (
        "complete_and_claim_runs",
        "expected_from",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], expected_from="pending"),
    ),
    (
        "complete_and_claim_runs",
        "expected_from",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], expected_from="completed"),
    ),
    (
        "complete_and_claim_runs",
        "expected_from",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], expected_from=None),  # type: ignore[arg-type]
    ),
    (
        "complete_and_claim_runs",
        "limit",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], limit=-1),
    ),
    (
        "complete_and_claim_runs",
        "limit",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], limit=1001),
    ),
    (
        "complete_and_claim_runs",
        "limit",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], limit=True),
    ),  # type: ignore[arg-type]
    (
        "complete_and_claim_runs",
        "limit",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], limit=2.0),
    ),  # type: ignore[arg-type]
    (
        "complete_and_claim_runs",
        "to",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], to="completed"),
    ),
    (
        "complete_and_claim_runs",
        "now",
        lambda db, p, r: complete_and_claim_runs(db, "w", [r], now=NAIVE),
    ),
    ("heartbeat", "db", lambda db, p, r: heartbeat(object(), r, "w")),  # type: ignore[arg-type]
    ("heartbeat", "run_id", lambda db, p, r: heartbeat(db, 5, "w")),  # type: ignore[arg-type]
    ("heartbeat", "run_id", lambda db, p, r: heartbeat(db, "\ud800", "w")),
    ("heartbeat", "worker_id", lambda db, p, r: heartbeat(db, r, 5)),  # type: ignore[arg-type]
    ("heartbeat", "worker_id", lambda db, p, r: heartbeat(db, r, None)),  # type: ignore[arg-type]
    ("heartbeat", "now", lambda db, p, r: heartbeat(db, r, "w", now=NAIVE)),
    ("reap_stale_runs", "db", lambda db, p, r: reap_stale_runs(None, timedelta(1))),  # type: ignore[arg-type]
    ("reap_stale_runs", "older_than", lambda db, p, r: reap_stale_runs(db, 5)),  # type: ignore[arg-type]
    ("reap_stale_runs", "older_than", lambda db, p, r: reap_stale_runs(db, None)),  # type: ignore[arg-type]
    ("reap_stale_runs", "older_than", lambda db, p, r: reap_stale_runs(db, "1h")),  # type: ignore[arg-type]
    ("reap_stale_runs", "older_than", lambda db, p, r: reap_stale_runs(db, -timedelta(1))),
    ("reap_stale_runs", "now", lambda db, p, r: reap_stale_runs(db, timedelta(1), NAIVE)),
    ("record_progress", "db", lambda db, p, r: record_progress(5, r, "s", 1.0)),  # type: ignore[arg-type]
    ("record_progress", "run_id", lambda db, p, r: record_progress(db, 5, "s", 1.0)),  # type: ignore[arg-type]
    ("record_progress", "stage", lambda db, p, r: record_progress(db, r, None, 1.0)),  # type: ignore[arg-type]
    ("record_progress", "stage", lambda db, p, r: record_progress(db, r, b"s", 1.0)),  # type: ignore[arg-type]
    ("record_progress", "percentage", lambda db, p, r: record_progress(db, r, "s", "x")),  # type: ignore[arg-type]
    ("record_progress", "percentage", lambda db, p, r: record_progress(db, r, "s", HUGE)),
    ("record_progress", "percentage", lambda db, p, r: record_progress(db, r, "s", None)),  # type: ignore[arg-type]
    ("record_progress", "message", lambda db, p, r: record_progress(db, r, "s", 1, b"m")),  # type: ignore[arg-type]
    ("record_progress", "message", lambda db, p, r: record_progress(db, r, "s", 1, "\ud800")),
    (
        "record_progress",
        "timestamp",
        lambda db, p, r: record_progress(db, r, "s", 1.0, timestamp=NAIVE),
    ),
    (
        "record_progress",
        "timestamp",
        lambda db, p, r: record_progress(db, r, "s", 1.0, timestamp=5),  # type: ignore[arg-type]
    ),
    ("record_progress_batch", "db", lambda db, p, r: record_progress_batch("x", [])),  # type: ignore[arg-type]
    ("record_progress_batch", "events", lambda db, p, r: record_progress_batch(db, "abc")),  # type: ignore[arg-type]
    ("record_progress_batch", "events", lambda db, p, r: record_progress_batch(db, None)),  # type: ignore[arg-type]
    ("record_progress_batch", "events", lambda db, p, r: record_progress_batch(db, 5)),  # type: ignore[arg-type]
    (
        "record_progress_batch",
        "events",
        lambda db, p, r: record_progress_batch(
            db,
            {"run_id": r, "stage": "s", "percentage": 1.0},  # type: ignore[arg-type]
        ),
    ),
    (
        "record_progress_batch",
        "timestamp",
        lambda db, p, r: record_progress_batch(
            db, [{"run_id": r, "stage": "s", "percentage": 1.0, "timestamp": NAIVE}]
        ),
    ),
    ("latest_progress", "db", lambda db, p, r: latest_progress([], [r])),  # type: ignore[arg-type]
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, r)),
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, 5)),  # type: ignore[arg-type]
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, None)),  # type: ignore[arg-type]
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, [5])),  # type: ignore[list-item]
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, {r: 1})),
    ("latest_progress", "run_ids", lambda db, p, r: latest_progress(db, ["\ud800"])),
    ("progress_since", "db", lambda db, p, r: progress_since(None, r)),  # type: ignore[arg-type]
    ("progress_since", "run_id", lambda db, p, r: progress_since(db, 5)),  # type: ignore[arg-type]
    ("progress_since", "run_id", lambda db, p, r: progress_since(db, [r])),  # type: ignore[arg-type]
    ("progress_since", "after", lambda db, p, r: progress_since(db, r, HUGE)),
    ("progress_since", "after", lambda db, p, r: progress_since(db, r, 1.5)),  # type: ignore[arg-type]
    ("progress_since", "after", lambda db, p, r: progress_since(db, r, None)),  # type: ignore[arg-type]
    ("progress_since", "after", lambda db, p, r: progress_since(db, r, -1)),
    ("follow_progress", "db", lambda db, p, r: follow_progress(None)),  # type: ignore[arg-type]
    ("follow_progress", "run_ids", lambda db, p, r: follow_progress(db, r)),
    ("follow_progress", "run_ids", lambda db, p, r: follow_progress(db, [5])),  # type: ignore[list-item]
    ("follow_progress", "after", lambda db, p, r: follow_progress(db, after=[r])),  # type: ignore[arg-type]
    ("follow_progress", "after", lambda db, p, r: follow_progress(db, after={r: -1})),
    ("follow_progress", "after", lambda db, p, r: follow_progress(db, after={r: 1.5})),  # type: ignore[dict-item]
    ("follow_progress", "after", lambda db, p, r: follow_progress(db, after={5: 1})),  # type: ignore[dict-item]
    ("follow_progress", "poll_interval", lambda db, p, r: follow_progress(db, poll_interval=0)),
    ("follow_progress", "idle_timeout", lambda db, p, r: follow_progress(db, idle_timeout=-1)),
    ("progress_since", "limit", lambda db, p, r: progress_since(db, r, 0, 1.5)),  # type: ignore[arg-type]
    ("progress_since", "limit", lambda db, p, r: progress_since(db, r, 0, HUGE)),
    ("progress_since", "limit", lambda db, p, r: progress_since(db, r, 0, None)),  # type: ignore[arg-type]
    ("get_run", "db", lambda db, p, r: get_run("sqlite://", r)),  # type: ignore[arg-type]
    ("get_run", "run_id", lambda db, p, r: get_run(db, 5)),  # type: ignore[arg-type]
    ("get_run", "run_id", lambda db, p, r: get_run(db, None)),  # type: ignore[arg-type]
    ("get_run", "run_id", lambda db, p, r: get_run(db, r.encode())),  # type: ignore[arg-type]
    ("get_run", "run_id", lambda db, p, r: get_run(db, "\ud800")),
    ("get_run", "run_id", lambda db, p, r: get_run(db, {"id": r})),  # type: ignore[arg-type]
    ("get_run_detail", "db", lambda db, p, r: get_run_detail(None, r)),  # type: ignore[arg-type]
    ("get_run_detail", "run_id", lambda db, p, r: get_run_detail(db, 5)),  # type: ignore[arg-type]
    ("get_run_detail", "run_id", lambda db, p, r: get_run_detail(db, "a\x00")),
    ("list_runs", "db", lambda db, p, r: list_runs(None)),  # type: ignore[arg-type]
    ("list_runs", "status", lambda db, p, r: list_runs(db, status=5)),  # type: ignore[arg-type]
    ("list_runs", "status", lambda db, p, r: list_runs(db, status=[5])),  # type: ignore[list-item]
    ("list_runs", "status", lambda db, p, r: list_runs(db, status="bogus")),
    ("list_runs", "status", lambda db, p, r: list_runs(db, status={"pending": 1})),  # type: ignore[arg-type]
    ("list_runs", "status", lambda db, p, r: list_runs(db, status=b"pending")),  # type: ignore[arg-type]
    ("list_runs", "model_type", lambda db, p, r: list_runs(db, model_type=5)),  # type: ignore[arg-type]
    ("list_runs", "model_type", lambda db, p, r: list_runs(db, model_type=["transfer"])),  # type: ignore[arg-type]
    ("list_runs", "prompt_id", lambda db, p, r: list_runs(db, prompt_id=5)),  # type: ignore[arg-type]
    ("list_runs", "prompt_id", lambda db, p, r: list_runs(db, prompt_id="\ud800")),
    ("list_runs", "created_after", lambda db, p, r: list_runs(db, created_after=NAIVE)),
    ("list_runs", "created_before", lambda db, p, r: list_runs(db, created_before="2025")),  # type: ignore[arg-type]
    ("list_runs", "json_filters", lambda db, p, r: list_runs(db, json_filters=A_FILTER)),  # type: ignore[arg-type]
    ("list_runs", "json_filters", lambda db, p, r: list_runs(db, json_filters=None)),  # type: ignore[arg-type]
    ("list_runs", "json_filters", lambda db, p, r: list_runs(db, json_filters=[5])),  # type: ignore[list-item]
    ("list_runs", "order", lambda db, p, r: list_runs(db, order="up")),  # type: ignore[arg-type]
    ("list_runs", "order", lambda db, p, r: list_runs(db, order=["newest"])),  # type: ignore[arg-type]
    ("list_runs", "limit", lambda db, p, r: list_runs(db, limit=1.5)),  # type: ignore[arg-type]
    ("list_runs", "limit", lambda db, p, r: list_runs(db, limit=HUGE)),
    ("list_runs", "limit", lambda db, p, r: list_runs(db, limit=0)),
    ("list_runs", "limit", lambda db, p, r: list_runs(db, limit=None)),  # type: ignore[arg-type]
    ("list_runs", "cursor", lambda db, p, r: list_runs(db, cursor=5)),  # type: ignore[arg-type]
    ("list_runs", "cursor", lambda db, p, r: list_runs(db, cursor=b"x")),  # type: ignore[arg-type]
    ("list_runs", "cursor", lambda db, p, r: list_runs(db, cursor="x" * 1_000_000)),
    ("list_prompts", "db", lambda db, p, r: list_prompts(5)),  # type: ignore[arg-type]
    ("list_prompts", "model_type", lambda db, p, r: list_prompts(db, model_type=5)),  # type: ignore[arg-type]
    ("list_prompts", "created_after", lambda db, p, r: list_prompts(db, created_after=NAIVE)),
    ("list_prompts", "json_filters", lambda db, p, r: list_prompts(db, json_filters=None)),  # type: ignore[arg-type]
    ("list_prompts", "order", lambda db, p, r: list_prompts(db, order=None)),  # type: ignore[arg-type]
    ("list_prompts", "limit", lambda db, p, r: list_prompts(db, limit="5")),  # type: ignore[arg-type]
    ("list_prompts", "cursor", lambda db, p, r: list_prompts(db, cursor=5)),  # type: ignore[arg-type]
    ("JsonFilter", "column", lambda db, p, r: JsonFilter(5, ("k",), "==", 1)),  # type: ignore[arg-type]
    ("JsonFilter", "column", lambda db, p, r: JsonFilter(None, ("k",), "==", 1)),  # type: ignore[arg-type]
    ("JsonFilter", "path", lambda db, p, r: JsonFilter("outputs", None, "==", 1)),  # type: ignore[arg-type]
    ("JsonFilter", "path", lambda db, p, r: JsonFilter("outputs", (-1,), "==", 1)),
    ("JsonFilter", "path", lambda db, p, r: JsonFilter("outputs", (HUGE,), "==", 1)),
    ("JsonFilter", "path", lambda db, p, r: JsonFilter("outputs", ("\ud800",), "==", 1)),
    ("JsonFilter", "path", lambda db, p, r: JsonFilter("outputs", (1.5,), "==", 1)),  # type: ignore[arg-type]
    ("JsonFilter", "op", lambda db, p, r: JsonFilter("outputs", ("k",), ["=="], 1)),  # type: ignore[arg-type]
    ("JsonFilter", "op", lambda db, p, r: JsonFilter("outputs", ("k",), None, 1)),  # type: ignore[arg-type]
    ("JsonFilter", "value", lambda db, p, r: JsonFilter("outputs", ("k",), "==", b"x")),  # type: ignore[arg-type]
    ("JsonFilter", "value", lambda db, p, r: JsonFilter("outputs", ("k",), "==", "\ud800")),
    ("JsonFilter", "value", lambda db, p, r: JsonFilter("outputs", ("k",), "<", math.nan)),
    ("JsonFilter", "value", lambda db, p, r: JsonFilter("outputs", ("k",), "==", {"a": 1})),  # type: ignore[arg-type]
    ("DatabaseConnection", "location", lambda db, p, r: DatabaseConnection(5)),  # type: ignore[arg-type]
    ("DatabaseConnection", "location", lambda db, p, r: DatabaseConnection(b"x.db")),  # type: ignore[arg-type]
    ("DatabaseConnection", "location", lambda db, p, r: DatabaseConnection("")),
    (
        "DatabaseConnection",
        "pool_size",
        lambda db, p, r: DatabaseConnection(":memory:", pool_size="5"),
    ),  # type: ignore[arg-type]
    (
        "DatabaseConnection",
        "pool_size",
        lambda db, p, r: DatabaseConnection(":memory:", pool_size=0),
    ),
    (
        "DatabaseConnection",
        "max_overflow",
        lambda db, p, r: DatabaseConnection(":memory:", max_overflow=1.5),
    ),  # type: ignore[arg-type]
    (
        "DatabaseConnection",
        "pool_recycle",
        lambda db, p, r: DatabaseConnection(":memory:", pool_recycle=None),
    ),  # type: ignore[arg-type]
    (
        "DatabaseConnection",
        "busy_timeout_ms",
        lambda db, p, r: DatabaseConnection(":memory:", busy_timeout_ms="x"),
    ),  # type: ignore[arg-type]
    (
        "DatabaseConnection",
        "busy_timeout_ms",
        lambda db, p, r: DatabaseConnection(":memory:", busy_timeout_ms=HUGE),
    ),
    (
        "DatabaseConnection",
        "sqlite_wal",
        lambda db, p, r: DatabaseConnection(":memory:", sqlite_wal="no"),
    ),  # type: ignore[arg-type]
    ("DatabaseConnection", "echo", lambda db, p, r: DatabaseConnection(":memory:", echo=None)),  # type: ignore[arg-type]
    ("init_database", "database_url", lambda db, p, r: init_database(5)),  # type: ignore[arg-type]
    ("init_database", "database_url", lambda db, p, r: init_database(b"x.db")),  # type: ignore[arg-type]
    ("init_database", "database_url", lambda db, p, r: init_database("nosuch://x")),
]

# Public callables that take no arguments, so have no shape to get wrong.
NO_ARGUMENTS = {"get_database_url", "api_json_schemas", "app_metadata"}
# Alembic's include_object hook: Alembic calls it with whatever it reflects, and it says yes or no.
HOOKS = {"include_app_object"}


def test_the_table_covers_every_public_function() -> None:
    public = {
        name for name in cosmos_models.__all__ if inspect.isfunction(getattr(cosmos_models, name))
    } | {"JsonFilter", "DatabaseConnection"}
    assert public - NO_ARGUMENTS - HOOKS == {function for function, _, _ in CASES}


def test_wrong_shaped_arguments_raise_value_error_naming_them(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    run_id = create_run(db, prompt_id, now=at(0)).id
    before = get_run(db, run_id)
    failures: list[str] = []
    for index, (function, argument, call) in enumerate(CASES):
        try:
            result = call(db, prompt_id, run_id)
        except ValueError as exc:
            message = str(exc)
            if not isinstance(exc, InvalidArgumentError | ValidationError):
                failures.append(f"{index} {function}: {type(exc).__name__}: {message}")
            # Ours say "argument: …"; pydantic's put the field on a line of its own ("0.field").
            elif not re.search(rf"(?:^|[\s.]){re.escape(argument)}(?::|$)", message, re.M):
                failures.append(f"{index} {function}: message does not name {argument}: {message}")
        except Exception as exc:  # any other type is the failure looked for
            failures.append(f"{index} {function}({argument}): {type(exc).__name__}: {exc}")
        else:
            if isinstance(result, DatabaseConnection):
                result.close()
            failures.append(f"{index} {function}({argument}): accepted, returned {result!r}")
    assert failures == []
    # Nothing was written: the run, its prompt and its (absent) progress are as they were.
    assert get_run(db, run_id) == before
    assert [run.id for run in list_runs(db).items] == [run_id]
    assert [prompt.id for prompt in list_prompts(db).items] == [prompt_id]
    assert latest_progress(db, [run_id]) == {}


def test_right_shaped_arguments_still_work(db: DatabaseConnection) -> None:
    # The same arguments in their right shapes, so the checks above refuse shapes, not uses.
    prompt_id = new_prompt(db, "transfer")
    run_id = create_run(db, {"prompt_id": prompt_id}, now=at(0)).id
    assert [run.id for run in list_runs(db, status=("pending",), model_type="transfer").items] == [
        run_id
    ]
    assert list_runs(db, status="pending", prompt_id=prompt_id, json_filters=[]).items
    assert claim_next_run(db, "w", ("reason",), now=at(1)) is None
    claimed = claim_next_run(db, "w", frozenset({"transfer"}), to="running", now=at(1))
    assert claimed is not None
    assert claimed.id == run_id
    assert claim_next_runs(db, "w", ["transfer"], limit=MAX_PAGE, now=at(1)) == []
    handed = complete_and_claim_runs(
        db, "w", iter([]), frozenset({"transfer"}), expected_from="downloading", limit=MAX_PAGE
    )
    assert handed == []
    assert complete_and_claim_runs(db, "w", (), limit=0) == []
    assert transition_runs(db, (), "running", expected_from="uploading") == []
    heartbeat(db, run_id, "w", now=at(2))
    record_progress_batch(
        db, (event for event in [{"run_id": run_id, "stage": "s", "percentage": 5}])
    )
    assert set(latest_progress(db, {run_id})) == {run_id}
    assert len(progress_since(db, run_id, 0, 1)) == 1
    assert reap_stale_runs(db, timedelta.max, now=at(3)) == []  # a window before any time
    assert reap_stale_runs(db, timedelta(seconds=1), now=datetime(9999, 1, 1, tzinfo=UTC)) == [
        run_id
    ]
    assert get_run_detail(db, run_id).status == "failed"
    assert JsonFilter("outputs", ["k", 0], "==", -(2**63)).path == ("k", 0)
