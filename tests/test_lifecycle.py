"""Creating prompts and runs, moving runs through the lifecycle, workers, on every backend."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from cosmos_models import (
    ALLOWED_TRANSITIONS,
    DatabaseConnection,
    IntegrityViolation,
    InvalidTransitionError,
    PromptCreate,
    PromptNotFoundError,
    RunCreate,
    RunFinishedError,
    RunNotFoundError,
    RunStatus,
    TransitionConflictError,
    WorkerMismatchError,
    claim_next_run,
    create_prompt,
    create_run,
    heartbeat,
    reap_stale_runs,
    transition,
)
from cosmos_models.services.common import resolve_now
from tests.concurrency import (
    PROCESS_BACKENDS,
    claim_all,
    in_processes,
    in_threads,
    move_once,
    process_url,
)
from tests.factories import T0, at, new_prompt, pending_runs

# -- creating ----------------------------------------------------------------------------------


def test_create_prompt_generates_an_id_and_returns_the_stored_row(db: DatabaseConnection) -> None:
    prompt = create_prompt(
        db,
        {"model_type": "reason", "prompt_text": "what next?", "inputs": {}, "parameters": {}},
        now=T0,
    )
    assert prompt.id.startswith("ps_")
    assert prompt.created_at == T0
    explicit = create_prompt(
        db, PromptCreate(id="ps_mine", model_type="x", prompt_text="t", inputs={}, parameters={})
    )
    assert explicit.id == "ps_mine"
    assert explicit.created_at.tzinfo is UTC


def test_create_prompt_refuses_bad_values_and_duplicates(db: DatabaseConnection) -> None:
    with pytest.raises(ValidationError, match="prompt_text"):
        create_prompt(db, {"model_type": "x", "prompt_text": " ", "inputs": {}, "parameters": {}})
    data = PromptCreate(id="ps_dup", model_type="x", prompt_text="t", inputs={}, parameters={})
    create_prompt(db, data)
    with pytest.raises(IntegrityViolation):
        create_prompt(db, data)
    with pytest.raises(ValueError, match="now"):
        create_prompt(db, data, now=datetime(2025, 1, 1))  # naive


def test_create_run_copies_the_prompt_model_type_unless_given(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db, "predict")
    copied = create_run(db, prompt_id, now=T0)
    assert (copied.model_type, copied.status, copied.created_at) == ("predict", "pending", T0)
    assert copied.updated_at == T0
    assert copied.started_at is copied.completed_at is copied.worker_id is None
    given = create_run(
        db,
        RunCreate(prompt_id=prompt_id, model_type="predict-v2", execution_config={"gpu": 1}),
    )
    assert (given.model_type, given.execution_config) == ("predict-v2", {"gpu": 1})
    from_dict = create_run(db, {"prompt_id": prompt_id, "run_metadata": {"k": "v"}})
    assert from_dict.run_metadata == {"k": "v"}


def test_create_run_refuses_unknown_prompts_bad_values_and_non_pending(
    db: DatabaseConnection,
) -> None:
    with pytest.raises(PromptNotFoundError, match="ps_missing") as caught:
        create_run(db, "ps_missing")
    assert isinstance(caught.value, LookupError)
    prompt_id = new_prompt(db)
    with pytest.raises(ValidationError, match="prompt_id"):
        create_run(db, "")
    with pytest.raises(ValidationError, match="model_type"):
        create_run(db, {"prompt_id": prompt_id, "model_type": " "})
    with pytest.raises(ValueError, match="status"):
        create_run(db, RunCreate(prompt_id=prompt_id, status=RunStatus.RUNNING))


def test_resolve_now_names_the_argument() -> None:
    assert resolve_now(datetime(2025, 1, 1, 13, tzinfo=UTC)).tzinfo is UTC
    with pytest.raises(ValueError, match="created_after"):
        resolve_now("2025-01-01", "created_after")  # type: ignore[arg-type]


# -- transitions -------------------------------------------------------------------------------


def test_transition_walks_the_happy_path_with_timestamps(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    uploading = transition(db, run_id, RunStatus.UPLOADING, now=at(10))
    assert (uploading.status, uploading.started_at, uploading.updated_at) == (
        "uploading",
        at(10),
        at(10),
    )
    running = transition(db, run_id, "running", expected_from="uploading", now=at(20))
    assert running.started_at == at(10)  # only set when the run first leaves pending
    transition(db, run_id, "downloading", now=at(30))
    done = transition(db, run_id, "completed", now=at(40))
    assert (done.completed_at, done.updated_at, done.error_message) == (at(40), at(40), None)


def test_updated_at_moves_without_an_explicit_time(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    moved = transition(db, run_id, "running")
    assert moved.updated_at > at(0)
    assert moved.started_at is not None


def test_failure_records_the_error_message(db: DatabaseConnection) -> None:
    run_a, run_b, run_c = pending_runs(db, 3)
    transition(db, run_a, "running", now=at(5))
    failed = transition(db, run_a, "failed", error_message="CUDA out of memory", now=at(9))
    assert (failed.status, failed.error_message, failed.completed_at) == (
        "failed",
        "CUDA out of memory",
        at(9),
    )
    # Failed or cancelled before any work began: it never started.
    cancelled = transition(db, run_b, "cancelled", error_message="user abort", now=at(7))
    assert (cancelled.started_at, cancelled.completed_at) == (None, at(7))
    with pytest.raises(ValueError, match="error_message"):
        transition(db, run_c, "running", error_message="not a failure")
    with pytest.raises(ValueError, match="error_message"):
        transition(db, run_c, "failed", error_message="nul\x00")
    with pytest.raises(ValueError, match="error_message"):
        transition(db, run_c, "failed", error_message="   ")


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (source, target)
        for source in RunStatus
        for target in RunStatus
        if target not in ALLOWED_TRANSITIONS[source]
    ],
)
def test_every_illegal_move_is_refused_naming_run_from_and_to(
    source: RunStatus, target: RunStatus
) -> None:
    with DatabaseConnection(":memory:") as db:
        db.create_tables()
        (run_id,) = pending_runs(db, 1)
        path = {
            RunStatus.PENDING: [],
            RunStatus.UPLOADING: ["uploading"],
            RunStatus.RUNNING: ["running"],
            RunStatus.DOWNLOADING: ["running", "downloading"],
            RunStatus.COMPLETED: ["running", "completed"],
            RunStatus.FAILED: ["failed"],
            RunStatus.CANCELLED: ["cancelled"],
        }[source]
        for step in path:
            transition(db, run_id, step)
        with pytest.raises(InvalidTransitionError) as caught:
            transition(db, run_id, target)
        error = caught.value
        assert (error.run_id, error.from_status, error.to_status) == (
            run_id,
            source.value,
            target.value,
        )
        assert run_id in str(error)
        assert source.value in str(error)
        assert target.value in str(error)


def test_transition_reports_conflicts_unknown_runs_and_statuses(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    transition(db, run_id, "running")
    with pytest.raises(TransitionConflictError) as caught:
        transition(db, run_id, "uploading", expected_from="pending")
    assert (caught.value.current, caught.value.expected) == ("running", "pending")
    with pytest.raises(RunNotFoundError, match="rs_missing"):
        transition(db, "rs_missing", "running")
    with pytest.raises(RunNotFoundError, match="rs_missing"):
        transition(db, "rs_missing", "running", expected_from="pending")
    with pytest.raises(ValueError, match="exploded"):
        transition(db, run_id, "exploded")


def test_sixteen_threads_racing_one_run_have_exactly_one_winner(db: DatabaseConnection) -> None:
    (run_id,) = pending_runs(db, 1)
    outcomes = in_threads(lambda _: move_once(db, run_id), 16)
    assert Counter(outcomes) == {"won": 1, "conflict:uploading": 15}


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_eight_processes_racing_one_run_have_exactly_one_winner(
    backend: str, db: DatabaseConnection
) -> None:
    url = process_url(db)
    (run_id,) = pending_runs(db, 1)
    outcomes = in_processes("move", url, [run_id] * 8)
    assert Counter(outcomes) == {"won": 1, "conflict:uploading": 7}


# -- workers -----------------------------------------------------------------------------------


def test_claim_takes_the_oldest_pending_run_then_the_smallest_id(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    newer = create_run(db, RunCreate(id="rs_a", prompt_id=prompt_id), now=at(5)).id
    tie_b = create_run(db, RunCreate(id="rs_c", prompt_id=prompt_id), now=at(1)).id
    tie_a = create_run(db, RunCreate(id="rs_b", prompt_id=prompt_id), now=at(1)).id
    claimed = claim_next_run(db, "gpu-001", now=at(10))
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.worker_id) == (tie_a, "uploading", "gpu-001")
    assert claimed.started_at == claimed.heartbeat_at == claimed.updated_at == at(10)
    second = claim_next_run(db, "gpu-002", to="running")
    third = claim_next_run(db, "gpu-003")
    assert second is not None
    assert third is not None
    assert (second.id, second.status, third.id) == (tie_b, "running", newer)
    assert claim_next_run(db, "gpu-004") is None


def test_claim_filters_on_model_types(db: DatabaseConnection) -> None:
    (transfer,) = pending_runs(db, 1, "transfer")
    (reason,) = pending_runs(db, 1, "reason")
    assert claim_next_run(db, "w", model_types=["predict"]) is None
    got = claim_next_run(db, "w", model_types=("reason", "predict"))
    assert got is not None
    assert got.id == reason
    got = claim_next_run(db, "w", model_types={"transfer"})
    assert got is not None
    assert got.id == transfer


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "x" * 256}, "worker_id"),
        ({"worker_id": "nul\x00"}, "worker_id"),
        ({"model_types": []}, "model_types"),
        ({"to": "completed"}, "to"),
        ({"now": datetime(2025, 1, 1)}, "now"),
    ],
)
def test_claim_refuses_bad_arguments(
    db: DatabaseConnection, kwargs: dict[str, Any], name: str
) -> None:
    arguments: dict[str, Any] = {"worker_id": "w", **kwargs}
    with pytest.raises(ValueError, match=name):
        claim_next_run(db, **arguments)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_eight_processes_claiming_one_queue_never_share_a_run(
    backend: str, db: DatabaseConnection
) -> None:
    url = process_url(db)
    run_ids = pending_runs(db, 40)
    outcomes = in_processes("claim", url, [f"worker-{i}" for i in range(8)])
    claimed = [run_id for outcome in outcomes for run_id in outcome]
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    duplicates = [run_id for run_id, seen in Counter(claimed).items() if seen > 1]
    assert duplicates == []
    assert sorted(claimed) == sorted(run_ids)


def test_sixteen_threads_claiming_one_queue_never_share_a_run(db: DatabaseConnection) -> None:
    run_ids = pending_runs(db, 40)
    outcomes = in_threads(lambda i: claim_all(db, f"thread-{i}"), 16)
    claimed = [run_id for outcome in outcomes for run_id in outcome]
    assert sorted(claimed) == sorted(run_ids)  # every run once: no duplicates, none lost


# Row locks exist on the servers only: SQLite's second writer waits for the whole database.
@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_claim_skips_a_row_locked_by_another_transaction(
    backend: str, db: DatabaseConnection
) -> None:
    first, second = pending_runs(db, 2)
    from sqlalchemy import text

    with db.engine.connect() as holder:
        holder.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"), {"id": first})
        claimed = in_threads(lambda _: claim_next_run(db, "w"), 1)[0]
        holder.rollback()
    assert claimed is not None
    assert claimed.id == second


def test_heartbeat_only_from_the_holding_worker(db: DatabaseConnection) -> None:
    run_id, other = pending_runs(db, 2)
    claim_next_run(db, "w1", now=at(10))
    heartbeat(db, run_id, "w1", now=at(20))
    with pytest.raises(WorkerMismatchError) as caught:
        heartbeat(db, run_id, "w2")
    assert (caught.value.holder, caught.value.worker_id) == ("w1", "w2")
    with pytest.raises(WorkerMismatchError, match="not held by any worker"):
        heartbeat(db, other, "w1")
    with pytest.raises(RunNotFoundError):
        heartbeat(db, "rs_missing", "w1")
    transition(db, run_id, "cancelled", now=at(30))
    with pytest.raises(RunFinishedError, match="cancelled"):
        heartbeat(db, run_id, "w1")


def test_reap_fails_runs_whose_heartbeat_is_too_old(db: DatabaseConnection) -> None:
    stale, fresh, unclaimed, manual = pending_runs(db, 4)
    claim_next_run(db, "w-stale", now=at(10))
    claim_next_run(db, "w-fresh", now=at(10))
    transition(db, manual, "running", now=at(10))  # moved without a worker: no heartbeat
    heartbeat(db, fresh, "w-fresh", now=at(100))
    assert reap_stale_runs(db, timedelta(seconds=60), now=at(30)) == []
    assert reap_stale_runs(db, timedelta(seconds=60), now=at(120)) == [stale]
    from cosmos_models.services.queries import get_run

    reaped = get_run(db, stale)
    assert (reaped.status, reaped.completed_at) == ("failed", at(120))
    assert reaped.error_message is not None
    assert "w-stale" in reaped.error_message
    assert "heartbeat" in reaped.error_message
    assert get_run(db, unclaimed).status == "pending"
    assert reap_stale_runs(db, timedelta(seconds=60), now=at(120)) == []  # already failed
    with pytest.raises(RunFinishedError):
        heartbeat(db, stale, "w-stale")


@pytest.mark.parametrize("older_than", [timedelta(0), timedelta(seconds=-1), 60])
def test_reap_refuses_a_non_positive_age(db: DatabaseConnection, older_than: Any) -> None:
    with pytest.raises(ValueError, match="older_than"):
        reap_stale_runs(db, older_than)
