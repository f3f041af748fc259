"""Small builders for valid rows, so each test states only what it is about."""

from datetime import UTC, datetime, timedelta
from typing import Any

from cosmos_models import (
    DatabaseConnection,
    Progress,
    Prompt,
    PromptCreate,
    Run,
    create_prompt,
    create_run,
)


def make_prompt(**overrides: Any) -> Prompt:
    values: dict[str, Any] = {
        "model_type": "transfer",
        "prompt_text": "cyberpunk city at night",
        "inputs": {"video": "/inputs/videos/city.mp4"},
        "parameters": {"num_steps": 35, "cfg_scale": 7.5},
    }
    values.update(overrides)
    return Prompt(**values)


def make_run(prompt: Prompt, **overrides: Any) -> Run:
    values: dict[str, Any] = {
        "prompt_id": prompt.id,
        "model_type": prompt.model_type,
        "execution_config": {"gpu_node": "gpu-001"},
    }
    values.update(overrides)
    return Run(**values)


def make_progress(run: Run, percentage: float = 0.0, **overrides: Any) -> Progress:
    values: dict[str, Any] = {
        "run_id": run.id,
        "stage": "uploading",
        "percentage": percentage,
        "message": "Starting upload",
    }
    values.update(overrides)
    return Progress(**values)


def add_prompt_with_run(
    db: DatabaseConnection, *, created_at: datetime | None = None
) -> tuple[str, str]:
    """Insert a prompt and one run of it; return their ids."""
    extra = {} if created_at is None else {"created_at": created_at}
    with db.get_session() as session:
        prompt = make_prompt(**extra)
        run = make_run(prompt, **extra)
        session.add(prompt)
        session.add(run)
        return prompt.id, run.id


T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
"""A fixed moment: tests state times explicitly instead of sleeping to order events."""


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def new_prompt(db: DatabaseConnection, model_type: str = "transfer") -> str:
    """Create a prompt through the lifecycle service; return its id."""
    data = PromptCreate(
        model_type=model_type,
        prompt_text="cyberpunk city at night",
        inputs={"video": "/inputs/videos/city.mp4"},
        parameters={"num_steps": 35},
    )
    return create_prompt(db, data).id


def pending_runs(db: DatabaseConnection, count: int, model_type: str = "transfer") -> list[str]:
    """Create ``count`` pending runs of a new prompt, one second apart; return their ids."""
    prompt_id = new_prompt(db, model_type)
    return [create_run(db, prompt_id, now=at(i)).id for i in range(count)]
