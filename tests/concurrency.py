"""Racing workers for the concurrency tests: threads share a connection, processes open their own.

Process targets live here, not in a test module, so that child processes import little.
"""

import multiprocessing
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from cosmos_models import (
    DatabaseConnection,
    TransitionConflictError,
    claim_next_run,
    claim_next_runs,
    complete_and_claim_runs,
    latest_progress,
    list_runs,
    progress_since,
    record_progress_batch,
    transition,
)
from tests.factories import T0

# A fork server imports this module once and forks clean children from it: as safe as spawn
# (no inherited engines or threads) without paying each child's imports on a 2-CPU machine.
_SPAWN = multiprocessing.get_context("forkserver")
_SPAWN.set_forkserver_preload(["tests.concurrency"])
TIMEOUT = 120


# Processes cannot share an in-memory database: process races run on every other backend.
PROCESS_BACKENDS = ("sqlite-file", "postgresql", "mariadb")


def process_url(db: DatabaseConnection) -> str:
    """The URL a child process opens; an in-memory database cannot be shared, so skip there."""
    if db.is_memory:
        pytest.skip("sqlite-memory lives inside one process; processes cannot share it")
    return db.url.render_as_string(hide_password=False)


def move_once(conn: DatabaseConnection, run_id: str) -> str:
    """Try pending → uploading once; say whether this caller won, lost the race, or failed."""
    try:
        transition(conn, run_id, "uploading", expected_from="pending")
    except TransitionConflictError as exc:
        return f"conflict:{exc.current}"
    except Exception as exc:  # reported, so that the test shows what went wrong
        return f"error:{type(exc).__name__}: {exc}"
    return "won"


def claim_all(conn: DatabaseConnection, worker_id: str, batch: int = 0) -> list[str]:
    """Claim runs until the queue is empty; return the ids this worker got.

    ``batch=0`` claims one at a time with ``claim_next_run``, else ``batch`` at a time with
    ``claim_next_runs``.
    """
    claimed = []
    if not batch:
        while (run := claim_next_run(conn, worker_id)) is not None:
            claimed.append(run.id)
        return claimed
    while runs := claim_next_runs(conn, worker_id, limit=batch):
        assert len(runs) <= batch
        claimed.extend(run.id for run in runs)
    return claimed


def hand_off_all(conn: DatabaseConnection, worker_id: str, batch: int) -> list[str]:
    """Claim ``batch`` runs into running, then complete each batch with the hand-off that claims
    the next, until the queue is empty; return the ids this worker completed."""
    completed: list[str] = []
    runs = claim_next_runs(conn, worker_id, limit=batch, to="running")
    while runs:
        assert len(runs) <= batch
        assert {run.worker_id for run in runs} == {worker_id}
        ids = [run.id for run in runs]
        runs = complete_and_claim_runs(conn, worker_id, ids, limit=batch, to="running")
        completed.extend(ids)
    return completed


def _child(job: str, url: str, arg: str, barrier: Any, results: Any) -> None:
    conn = DatabaseConnection(url)
    try:
        barrier.wait(TIMEOUT)
        kind, _, size = job.partition(":")
        if kind == "move":
            results.put(move_once(conn, arg))
        elif kind == "hand-off":  # "hand-off:N", N at a time
            results.put(hand_off_all(conn, arg, int(size)))
        else:  # "claim" one at a time, or "claim:N" N at a time
            results.put(claim_all(conn, arg, int(size or 0)))
    except Exception as exc:
        results.put(f"error:{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def in_processes(job: str, url: str, args: list[str]) -> list[Any]:
    """Run ``job`` ("move", "claim", "claim:N" or "hand-off:N") in one spawned process per arg,
    started together."""
    return together([(_child, (job, url, arg)) for arg in args])


def together(jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> list[Any]:
    """Start one process per ``(target, args)``, released together; return what each reported.

    Each target is called as ``target(*args, barrier, results)`` and must wait at the barrier,
    then put exactly one outcome on ``results``. Outcomes come back in the order they arrive.
    """
    barrier = _SPAWN.Barrier(len(jobs))
    results = _SPAWN.Queue()
    children = [
        _SPAWN.Process(target=target, args=(*args, barrier, results)) for target, args in jobs
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=TIMEOUT) for _ in children]
    for child in children:
        child.join(TIMEOUT)
    return outcomes


# -- progress writers and dashboard readers (tests/reliability) --------------------------------


def progress_events(run_id: str, writer: int, first: int, count: int) -> list[dict[str, Any]]:
    """Events ``first`` .. ``first + count - 1`` of one writer; the message carries the number."""
    return [
        {
            "run_id": run_id,
            "stage": "inference",
            "percentage": sequence % 101,
            "message": f"{writer}:{sequence}",
            "timestamp": T0 + timedelta(seconds=sequence, microseconds=writer),
        }
        for sequence in range(first, first + count)
    ]


def sequence_of(message: str) -> int:
    """The event number a ``progress_events`` message carries."""
    return int(message.rsplit(":", 1)[1])


def progress_writer(
    url: str, run_id: str, writer: int, events: int, batch: int, barrier: Any, results: Any
) -> None:
    """Record ``events`` events in batches of ``batch``; report "ok" or the error."""
    conn = DatabaseConnection(url)
    try:
        barrier.wait(TIMEOUT)
        for first in range(0, events, batch):
            record_progress_batch(
                conn, progress_events(run_id, writer, first, min(batch, events - first))
            )
        results.put("ok")
    except Exception as exc:
        results.put(f"error:{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def dashboard_reader(
    url: str, run_ids: list[str], expected: int, batch: int, barrier: Any, results: Any
) -> None:
    """Poll dashboards until every run shows ``expected`` events; report what was wrong.

    Each poll continues from the last seq seen (``progress_since``), so a run's events must
    arrive in their writer's order with no gap, and since batches commit whole and the page
    size is a multiple of the batch size, every poll must end on a batch boundary.
    """
    conn = DatabaseConnection(url)
    try:
        barrier.wait(TIMEOUT)
        seen = dict.fromkeys(run_ids, 0)
        last_seq = dict.fromkeys(run_ids, 0)
        problems: list[str] = []
        polls = 0
        deadline = time.monotonic() + TIMEOUT
        while min(seen.values()) < expected and not problems:
            if time.monotonic() > deadline:
                problems.append(f"timed out having seen {seen}")
            polls += 1
            for run_id in run_ids:
                page = progress_since(conn, run_id, after=last_seq[run_id], limit=5 * batch)
                for event in page:
                    if sequence_of(event.message) != seen[run_id]:
                        problems.append(f"{run_id}: got {event.message} after {seen[run_id]}")
                        break
                    seen[run_id] += 1
                    last_seq[run_id] = event.seq
                if seen[run_id] % batch:
                    problems.append(f"{run_id}: a poll saw part of a batch ({seen[run_id]})")
            latest = latest_progress(conn, run_ids)
            if any(sequence_of(event.message) + 1 < seen[rid] for rid, event in latest.items()):
                problems.append(f"latest_progress is behind progress_since: {latest}")
            if len(list_runs(conn, status="running", limit=50).items) != len(run_ids):
                problems.append("list_runs lost a running run")
        results.put({"polls": polls, "problems": problems})
    except Exception as exc:
        results.put(f"error:{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def in_threads(work: Callable[[int], Any], count: int) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; return their results."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(TIMEOUT)
        outcomes[index] = work(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    return outcomes


def waiting_for_a_lock(db: DatabaseConnection) -> bool:
    """True while a statement of this database's sessions waits for a row lock (servers only)."""
    # This database's sessions only: other suites share the server.
    if db.engine.dialect.name == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    else:
        # MariaDB's innodb_trx does not reliably list a waiting locking read: the processlist
        # shows the batch's SELECT … FOR UPDATE under way instead.
        query = (
            "SELECT count(*) FROM information_schema.processlist "
            "WHERE db = DATABASE() AND command = 'Query' AND info LIKE '%FOR UPDATE'"
        )
    with db.engine.connect() as connection:
        return bool(connection.execute(text(query)).scalar())


def attempt_while_held(
    db: DatabaseConnection, run_id: str, held_from: str, held_to: str, attempt: Callable[[], str]
) -> list[str]:
    """Run ``attempt`` while another writer moves ``run_id`` (put in ``held_from`` first) to
    ``held_to``: the writer holds the row until ``attempt`` waits for it, then commits. Returns
    what ``attempt`` returned (a one-item list; empty if it never finished)."""
    with db.engine.begin() as connection:
        connection.execute(
            text("UPDATE runs SET status = :s WHERE id = :i"), {"s": held_from, "i": run_id}
        )
    result: list[str] = []
    with db.engine.connect() as holder:
        holder.execute(
            text("UPDATE runs SET status = :s WHERE id = :i"), {"s": held_to, "i": run_id}
        )
        waiting = threading.Thread(target=lambda: result.append(attempt()), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(db):  # the attempt's statement is under way, blocked
            assert time.monotonic() < deadline, "the attempt never waited for the held run"
            time.sleep(0.005)
        holder.commit()
    waiting.join(30)
    return result
