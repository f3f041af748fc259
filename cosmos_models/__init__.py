"""cosmos_models: the typed data layer recording how AI video models are run."""

from cosmos_models.db.apps import app_metadata, app_tables, create_app_tables, include_app_object
from cosmos_models.db.connection import DatabaseConnection, init_database
from cosmos_models.db.json_filters import JsonFilter
from cosmos_models.db.locations import get_database_url
from cosmos_models.db.migrate import check_schema
from cosmos_models.db.replicas import ReadRoutingStats
from cosmos_models.errors import (
    CommitUnknownError,
    CosmosModelsError,
    DatabaseError,
    IntegrityViolation,
    InvalidArgumentError,
    InvalidTransitionError,
    MigrationError,
    NotFoundError,
    PromptNotFoundError,
    RunFinishedError,
    RunNotFoundError,
    SchemaNotCurrentError,
    TransitionConflictError,
    ValueTooLargeError,
    WorkerMismatchError,
)
from cosmos_models.models.progress import Progress, ProgressCreate, ProgressRead
from cosmos_models.models.prompt import Prompt, PromptCreate, PromptRead, PromptUpdate
from cosmos_models.models.readmodels import Page, PromptSummary, RunDetail, api_json_schemas
from cosmos_models.models.run import Run, RunCreate, RunRead
from cosmos_models.models.status import ACTIVE_STATUSES, ALLOWED_TRANSITIONS, RunStatus
from cosmos_models.models.types import metadata
from cosmos_models.services.batch_transitions import transition_runs
from cosmos_models.services.claims import claim_next_run, claim_next_runs
from cosmos_models.services.editing import cancel_run, delete_prompt, delete_run, update_prompt
from cosmos_models.services.follow import follow_progress
from cosmos_models.services.handoff import complete_and_claim_runs
from cosmos_models.services.lifecycle import (
    create_prompt,
    create_run,
    heartbeat,
    reap_stale_runs,
    transition,
)
from cosmos_models.services.progress_queries import latest_progress, progress_since
from cosmos_models.services.queries import (
    get_prompt,
    get_run,
    get_run_detail,
    list_prompts,
    list_runs,
)
from cosmos_models.services.tracking import record_progress, record_progress_batch

__all__ = [
    "ACTIVE_STATUSES",
    "ALLOWED_TRANSITIONS",
    "CommitUnknownError",
    "CosmosModelsError",
    "DatabaseConnection",
    "DatabaseError",
    "IntegrityViolation",
    "InvalidArgumentError",
    "InvalidTransitionError",
    "JsonFilter",
    "MigrationError",
    "NotFoundError",
    "Page",
    "Progress",
    "ProgressCreate",
    "ProgressRead",
    "Prompt",
    "PromptCreate",
    "PromptNotFoundError",
    "PromptRead",
    "PromptSummary",
    "PromptUpdate",
    "ReadRoutingStats",
    "Run",
    "RunCreate",
    "RunDetail",
    "RunFinishedError",
    "RunNotFoundError",
    "RunRead",
    "RunStatus",
    "SchemaNotCurrentError",
    "TransitionConflictError",
    "ValueTooLargeError",
    "WorkerMismatchError",
    "api_json_schemas",
    "app_metadata",
    "app_tables",
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
    "get_database_url",
    "get_prompt",
    "get_run",
    "get_run_detail",
    "heartbeat",
    "include_app_object",
    "init_database",
    "latest_progress",
    "list_prompts",
    "list_runs",
    "metadata",
    "progress_since",
    "reap_stale_runs",
    "record_progress",
    "record_progress_batch",
    "transition",
    "transition_runs",
    "update_prompt",
]
