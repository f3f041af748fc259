"""Changing prompts and runs after they were created: update a prompt, delete, cancel a run.

Deletes take the run rows' locks first, in the order progress writers and prunes take them
(``maintenance.lock_runs``), then remove progress, runs and prompt in one transaction: a writer
racing a delete either commits first (and its events go with the run) or finds the run gone.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, PROMPTS, RUNS
from cosmos_models.errors import (
    InvalidArgumentError,
    InvalidTransitionError,
    PromptNotFoundError,
    RunNotFoundError,
    TransitionConflictError,
)
from cosmos_models.models.checks import check_str
from cosmos_models.models.prompt import Prompt, PromptRead, PromptUpdate
from cosmos_models.models.run import RunRead
from cosmos_models.models.status import RunStatus
from cosmos_models.services.common import check_connection
from cosmos_models.services.lifecycle import transition
from cosmos_models.services.maintenance import lock_runs


def update_prompt(
    db: DatabaseConnection,
    prompt_id: str,
    changes: PromptUpdate | Mapping[str, Any],
) -> PromptRead:
    """Change the fields of a prompt given in ``changes`` (a ``PromptUpdate`` or a mapping).

    Fields left out keep their values; ``id`` and ``created_at`` never change. Raises
    ``pydantic.ValidationError`` for an invalid field, ``InvalidArgumentError`` naming a field
    given as null (every prompt field is required), an unknown field or a wrong argument,
    ``PromptNotFoundError``.
    """
    check_connection(db)
    check_str(prompt_id, "prompt_id")
    if not isinstance(changes, PromptUpdate | Mapping):
        raise InvalidArgumentError(
            f"changes: must be a PromptUpdate or a mapping of its fields, "
            f"got {type(changes).__name__}"
        )
    if isinstance(changes, Mapping):
        for name in changes:
            if name not in PromptUpdate.model_fields:
                known = ", ".join(PromptUpdate.model_fields)
                raise InvalidArgumentError(f"{name}: not a field a prompt update changes ({known})")
    # SQLModel's model_validate marks every field as set: the caller's own instance keeps its
    # fields_set, and a mapping is validated as a new instance, which then has only its keys set.
    update = changes if isinstance(changes, PromptUpdate) else PromptUpdate(**changes)
    values = update.model_dump(exclude_unset=True)
    for name, value in values.items():
        if value is None:
            raise InvalidArgumentError(f"{name}: a prompt's {name} cannot be null")
    with db.get_session() as session:
        prompt = session.get(Prompt, prompt_id, with_for_update=True)
        if prompt is None:
            raise PromptNotFoundError(prompt_id)
        for name, value in values.items():
            setattr(prompt, name, value)  # validated again by the table (ValidatedTable)
        session.flush()
        return PromptRead.model_validate(prompt, from_attributes=True)


def _delete_runs(db: DatabaseConnection, prompt_id: str | None, run_id: str | None) -> int:
    """Delete a prompt's runs (and the prompt) or one run, with their progress; count runs."""
    with db.begin() as connection:
        if prompt_id is not None:
            found = connection.execute(
                select(PROMPTS.c.id).where(PROMPTS.c.id == prompt_id).with_for_update()
            ).scalar()
            if found is None:
                raise PromptNotFoundError(prompt_id)
            run_ids = list(
                connection.execute(select(RUNS.c.id).where(RUNS.c.prompt_id == prompt_id)).scalars()
            )
        else:
            assert run_id is not None
            run_ids = [run_id]
        locked = [row.id for row in lock_runs(connection, run_ids)] if run_ids else []
        if run_id is not None and not locked:
            raise RunNotFoundError(run_id)
        if locked:
            connection.execute(PROGRESS.delete().where(PROGRESS.c.run_id.in_(locked)))
            connection.execute(RUNS.delete().where(RUNS.c.id.in_(locked)))
        if prompt_id is not None:
            # A run created for this prompt after the read above: the foreign key refuses the
            # prompt's delete (IntegrityViolation) rather than leave an orphan.
            connection.execute(PROMPTS.delete().where(PROMPTS.c.id == prompt_id))
        return len(locked)


def delete_prompt(db: DatabaseConnection, prompt_id: str) -> int:
    """Delete a prompt with its runs and their progress; return how many runs went with it.

    Raises ``PromptNotFoundError``, ``InvalidArgumentError`` naming a bad argument,
    ``DatabaseError`` for database errors.
    """
    check_connection(db)
    check_str(prompt_id, "prompt_id")
    return _delete_runs(db, prompt_id, None)


def delete_run(db: DatabaseConnection, run_id: str) -> None:
    """Delete a run with its progress (whatever its status). Its prompt stays.

    Raises ``RunNotFoundError``, ``InvalidArgumentError`` naming a bad argument,
    ``DatabaseError`` for database errors.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    _delete_runs(db, None, run_id)


def cancel_run(
    db: DatabaseConnection,
    run_id: str,
    *,
    error_message: str | None = None,
    now: datetime | None = None,
) -> RunRead:
    """Move a run that is not final yet to ``cancelled`` (``error_message`` says why).

    A worker moving the run meanwhile does not make the cancel fail: it is retried from the
    status found (statuses only move forward, so at most once per status). Raises
    ``InvalidTransitionError`` if the run is already completed, failed or cancelled,
    ``RunNotFoundError``, ``InvalidArgumentError`` naming a bad argument.
    """
    check_connection(db)
    check_str(run_id, "run_id")
    expected: RunStatus | None = None
    for _ in RunStatus:
        try:
            return transition(
                db,
                run_id,
                RunStatus.CANCELLED,
                error_message=error_message,
                expected_from=expected,
                now=now,
            )
        except TransitionConflictError as conflict:
            expected = RunStatus(conflict.current)
    raise InvalidTransitionError(  # pragma: no cover - more moves than statuses cannot happen
        run_id, str(expected), RunStatus.CANCELLED.value
    )
