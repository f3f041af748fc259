"""cosmos_models: the typed data layer recording how AI video models are run."""

from cosmos_models.connection import DatabaseConnection, get_database_url, init_database
from cosmos_models.errors import (
    CosmosModelsError,
    DatabaseError,
    IntegrityViolation,
    MigrationError,
)
from cosmos_models.progress import Progress, ProgressCreate, ProgressRead
from cosmos_models.prompt import Prompt, PromptCreate, PromptRead, PromptUpdate
from cosmos_models.run import ALLOWED_TRANSITIONS, Run, RunCreate, RunRead, RunStatus
from cosmos_models.types import metadata

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CosmosModelsError",
    "DatabaseConnection",
    "DatabaseError",
    "IntegrityViolation",
    "MigrationError",
    "Progress",
    "ProgressCreate",
    "ProgressRead",
    "Prompt",
    "PromptCreate",
    "PromptRead",
    "PromptUpdate",
    "Run",
    "RunCreate",
    "RunRead",
    "RunStatus",
    "get_database_url",
    "init_database",
    "metadata",
]
