"""Reliability: the lifecycle races of tests/test_lifecycle.py, repeated on every backend.

A race that goes wrong one time in fifty passes a single shot. ``COSMOS_RELIABILITY_ROUNDS``
sets the repetitions: 2 in ``make test``, 25 in ``make reliability``.
"""

import os
from collections import Counter
from typing import Any

import pytest

from cosmos_models import DatabaseConnection
from tests.concurrency import (
    PROCESS_BACKENDS,
    claim_all,
    in_processes,
    in_threads,
    move_once,
    process_url,
)
from tests.factories import pending_runs

pytestmark = pytest.mark.reliability

ROUNDS = int(os.environ.get("COSMOS_RELIABILITY_ROUNDS", "2"))
THREADS, PROCESSES, QUEUE = 16, 8, 40


def test_transition_races_of_threads_have_one_winner_every_round(db: DatabaseConnection) -> None:
    for round_number in range(ROUNDS):
        (run_id,) = pending_runs(db, 1)
        outcomes = in_threads(lambda _, run_id=run_id: move_once(db, run_id), THREADS)
        assert Counter(outcomes) == {"won": 1, "conflict:uploading": THREADS - 1}, round_number


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_transition_races_of_processes_have_one_winner_every_round(
    backend: str, db: DatabaseConnection
) -> None:
    url = process_url(db)
    for round_number in range(ROUNDS):
        (run_id,) = pending_runs(db, 1)
        outcomes = in_processes("move", url, [run_id] * PROCESSES)
        assert Counter(outcomes) == {"won": 1, "conflict:uploading": PROCESSES - 1}, round_number


def _assert_each_run_claimed_once(
    outcomes: list[Any], run_ids: list[str], round_number: int
) -> None:
    assert all(isinstance(outcome, list) for outcome in outcomes), (round_number, outcomes)
    claimed = [run_id for outcome in outcomes for run_id in outcome]
    duplicates = [run_id for run_id, seen in Counter(claimed).items() if seen > 1]
    assert duplicates == [], round_number
    assert sorted(claimed) == sorted(run_ids), round_number  # none lost either


# batch 0: claim_next_run; else claim_next_runs with that limit.
@pytest.mark.parametrize("batch", [0, 3])
def test_claim_races_of_threads_share_no_run_every_round(
    db: DatabaseConnection, batch: int
) -> None:
    for round_number in range(ROUNDS):
        run_ids = pending_runs(db, QUEUE)
        outcomes = in_threads(lambda i: claim_all(db, f"thread-{i}", batch), THREADS)
        _assert_each_run_claimed_once(outcomes, run_ids, round_number)


@pytest.mark.parametrize("job", ["claim", "claim:4"])
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_claim_races_of_processes_share_no_run_every_round(
    backend: str, db: DatabaseConnection, job: str
) -> None:
    url = process_url(db)
    for round_number in range(ROUNDS):
        run_ids = pending_runs(db, QUEUE)
        outcomes = in_processes(job, url, [f"worker-{i}" for i in range(PROCESSES)])
        _assert_each_run_claimed_once(outcomes, run_ids, round_number)
