"""Reliability: claims are never blocked by a looping reaper, on every backend.

On MariaDB at REPEATABLE READ the reaper's ``FOR UPDATE SKIP LOCKED`` locked every row its scan
looked at, pending ones included, so claimants skipped them, saw an empty queue and stopped:
88 of 100 runs stayed pending. ``COSMOS_RELIABILITY_SCALE`` sizes the queue: 1
(``make reliability``) is the full 100 runs, the default is a quarter of it.
"""

import os
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cosmos_models import DatabaseConnection, claim_next_run, list_runs, reap_stale_runs
from cosmos_models.models.types import utcnow
from tests.concurrency import PROCESS_BACKENDS, claim_all, in_processes, in_threads, process_url
from tests.factories import at, pending_runs

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("COSMOS_RELIABILITY_SCALE", "0.25"))
QUEUE = max(20, round(100 * SCALE))
CLAIMANTS = 8
STALE = 10


class _Reaper:
    """A thread reaping in a loop until stopped; it counts its passes and keeps its errors."""

    def __init__(self, db: DatabaseConnection) -> None:
        self.db = db
        self.stop = threading.Event()
        self.passes = 0
        self.reaped = 0
        self.errors: list[str] = []
        self.first_pass = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        while True:
            try:
                # A day ahead: every active run is stale, those claimed a moment ago included,
                # so each pass locks and fails rows while the claimants work.
                self.reaped += len(
                    reap_stale_runs(self.db, timedelta(hours=1), now=utcnow() + timedelta(days=1))
                )
            except Exception as exc:  # reported by the test
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.passes += 1
            self.first_pass.set()
            if self.stop.is_set():
                return

    def __enter__(self) -> "_Reaper":
        self.thread.start()
        # The lost worker's runs are reaped before the claimants start; later passes overlap them.
        assert self.first_pass.wait(120)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(120)


def _queue_with_stale_runs(db: DatabaseConnection) -> list[str]:
    """``STALE`` active runs of a lost worker (old heartbeats), then ``QUEUE`` pending runs."""
    for run_id in pending_runs(db, STALE):
        assert claim_next_run(db, "lost-worker", now=at(0)) is not None, run_id
    return pending_runs(db, QUEUE)


def _assert_claimed_once(db: DatabaseConnection, outcomes: list[Any], run_ids: list[str]) -> None:
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    claimed = Counter(run_id for outcome in outcomes for run_id in outcome)
    assert [run_id for run_id, times in claimed.items() if times > 1] == []
    assert sorted(claimed) == sorted(run_ids)
    assert list_runs(db, status="pending").items == []


def test_threads_claim_every_run_once_while_a_reaper_loops(db: DatabaseConnection) -> None:
    run_ids = _queue_with_stale_runs(db)
    with _Reaper(db) as reaper:
        outcomes = in_threads(lambda i: claim_all(db, f"claimant-{i}"), CLAIMANTS)
    assert reaper.errors == []
    assert reaper.passes > 1
    assert reaper.reaped >= STALE
    _assert_claimed_once(db, outcomes, run_ids)


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_processes_claim_every_run_once_while_a_reaper_loops(
    backend: str, db: DatabaseConnection
) -> None:
    url = process_url(db)
    run_ids = _queue_with_stale_runs(db)
    with _Reaper(db) as reaper:
        outcomes = in_processes("claim", url, [f"claimant-{i}" for i in range(CLAIMANTS)])
    assert reaper.errors == []
    assert reaper.passes > 1
    assert reaper.reaped >= STALE
    _assert_claimed_once(db, outcomes, run_ids)
