"""Prompts and runs after creation: get/update/delete a prompt, delete and cancel a run."""

from datetime import timedelta

import pytest
from pydantic import ValidationError

from cosmos_models import (
    DatabaseConnection,
    InvalidTransitionError,
    PromptNotFoundError,
    PromptUpdate,
    RunNotFoundError,
    cancel_run,
    claim_next_run,
    create_run,
    delete_prompt,
    delete_run,
    get_prompt,
    get_run,
    latest_progress,
    list_runs,
    progress_since,
    record_progress,
    update_prompt,
)
from cosmos_models.db.tables import PROGRESS
from tests.factories import at, new_prompt


def count_progress(db: DatabaseConnection) -> int:
    with db.connect(read_only=True) as connection:
        return len(connection.execute(PROGRESS.select()).all())


def test_get_prompt_returns_it_or_names_the_missing_id(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db, "reason")
    prompt = get_prompt(db, prompt_id)
    assert (prompt.id, prompt.model_type, prompt.parameters) == (
        prompt_id,
        "reason",
        {"num_steps": 35},
    )
    with pytest.raises(PromptNotFoundError, match="'nope'"):
        get_prompt(db, "nope")


def test_update_prompt_changes_only_the_fields_given(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    before = get_prompt(db, prompt_id)
    after = update_prompt(db, prompt_id, {"prompt_text": "rainy harbour", "inputs": {"v": [1]}})
    assert after.prompt_text == "rainy harbour"
    assert after.inputs == {"v": [1]}
    assert (after.parameters, after.model_type, after.created_at) == (
        before.parameters,
        before.model_type,
        before.created_at,
    )
    assert get_prompt(db, prompt_id) == after
    again = update_prompt(db, prompt_id, PromptUpdate(parameters={"steps": 2.5}))
    assert again.parameters == {"steps": 2.5}
    assert again.prompt_text == "rainy harbour"
    assert update_prompt(db, prompt_id, {}) == again  # nothing given, nothing changed


def test_update_prompt_refuses_bad_values_and_writes_nothing(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    before = get_prompt(db, prompt_id)
    with pytest.raises(ValidationError, match="parameters"):
        update_prompt(db, prompt_id, {"parameters": {"x": float("nan")}})
    with pytest.raises(ValueError, match="model_type: a prompt's model_type cannot be null"):
        update_prompt(db, prompt_id, {"model_type": None})
    with pytest.raises(PromptNotFoundError):
        update_prompt(db, "missing", {"prompt_text": "x"})
    assert get_prompt(db, prompt_id) == before


def test_delete_prompt_takes_its_runs_and_their_progress(db: DatabaseConnection) -> None:
    kept = new_prompt(db)
    kept_run = create_run(db, kept, now=at(0)).id
    doomed = new_prompt(db)
    runs = [create_run(db, doomed, now=at(i)).id for i in range(3)]
    for run_id in [*runs, kept_run]:
        record_progress(db, run_id, "running", 10.0)
    assert delete_prompt(db, doomed) == 3
    with pytest.raises(PromptNotFoundError):
        get_prompt(db, doomed)
    assert [run.id for run in list_runs(db).items] == [kept_run]
    assert count_progress(db) == 1
    assert delete_prompt(db, kept) == 1
    assert count_progress(db) == 0
    with pytest.raises(PromptNotFoundError):
        delete_prompt(db, kept)


def test_delete_run_keeps_its_prompt_and_other_runs(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    first, second = (create_run(db, prompt_id, now=at(i)).id for i in range(2))
    record_progress(db, first, "running", 5.0)
    record_progress(db, second, "running", 7.0)
    delete_run(db, first)
    with pytest.raises(RunNotFoundError):
        get_run(db, first)
    with pytest.raises(RunNotFoundError):
        progress_since(db, first, 0)
    assert count_progress(db) == 1
    assert set(latest_progress(db, [first, second])) == {second}
    assert get_prompt(db, prompt_id).id == prompt_id
    with pytest.raises(RunNotFoundError):
        delete_run(db, first)


def test_cancel_run_from_any_unfinished_status(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    pending = create_run(db, prompt_id, now=at(0)).id
    cancelled = cancel_run(db, pending, error_message="user asked", now=at(1))
    assert (cancelled.status, cancelled.error_message, cancelled.started_at) == (
        "cancelled",
        "user asked",
        None,
    )
    assert cancelled.completed_at == at(1)
    running = create_run(db, prompt_id, now=at(2)).id
    claim_next_run(db, "w", to="running", now=at(3))
    assert cancel_run(db, running).status == "cancelled"
    with pytest.raises(InvalidTransitionError, match="'cancelled' to 'cancelled'"):
        cancel_run(db, running)
    with pytest.raises(RunNotFoundError):
        cancel_run(db, "missing")


def test_cancel_run_retries_when_a_worker_moved_the_run_first(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's move lands between the cancel's read of the status and its update.
    import cosmos_models.services.editing as editing

    prompt_id = new_prompt(db)
    run_id = create_run(db, prompt_id, now=at(0)).id
    real = editing.transition
    calls: list[object] = []

    def racing(*args: object, **kwargs: object) -> object:
        if not calls:
            real(db, run_id, "running", now=at(1))  # the worker, first (sync on both sides)
            kwargs["expected_from"] = "pending"  # what the cancel had read
        calls.append(kwargs.get("expected_from"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(editing, "transition", racing)
    result = cancel_run(db, run_id, now=at(2) + timedelta(0))
    assert result.status == "cancelled"
    assert result.started_at == at(1)
    assert calls == ["pending", "running"]


def test_progress_since_past_any_seq_is_empty_on_every_backend(db: DatabaseConnection) -> None:
    # seq columns are 32-bit INTEGERs: a larger bound once failed on PostgreSQL (found by
    # schemathesis through GET /runs/{id}/progress?after=9223372036854775806).
    run_id = create_run(db, new_prompt(db), now=at(0)).id
    record_progress(db, run_id, "running", 5.0)
    assert progress_since(db, run_id, 2**63 - 1) == []
    assert progress_since(db, run_id, 2**31) == []
    assert [event.seq for event in progress_since(db, run_id, 0)] == [1]
