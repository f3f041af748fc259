"""Racing workers for the concurrency tests: threads share a connection, processes open their own.

Process targets live here, not in a test module, so that child processes import little.
"""

import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cosmos_models import DatabaseConnection, TransitionConflictError, claim_next_run, transition

# A fork server imports this module once and forks clean children from it: as safe as spawn
# (no inherited engines or threads) without paying each child's imports on a 2-CPU machine.
_SPAWN = multiprocessing.get_context("forkserver")
_SPAWN.set_forkserver_preload(["tests.concurrency"])
TIMEOUT = 120


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


def claim_all(conn: DatabaseConnection, worker_id: str) -> list[str]:
    """Claim runs until the queue is empty; return the ids this worker got."""
    claimed = []
    while (run := claim_next_run(conn, worker_id)) is not None:
        claimed.append(run.id)
    return claimed


def _child(job: str, url: str, arg: str, barrier: Any, results: Any) -> None:
    conn = DatabaseConnection(url)
    try:
        barrier.wait(TIMEOUT)
        results.put(move_once(conn, arg) if job == "move" else claim_all(conn, arg))
    except Exception as exc:
        results.put(f"error:{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def in_processes(job: str, url: str, args: list[str]) -> list[Any]:
    """Run ``job`` ("move" or "claim") in one spawned process per arg, started together."""
    barrier = _SPAWN.Barrier(len(args))
    results = _SPAWN.Queue()
    children = [
        _SPAWN.Process(target=_child, args=(job, url, arg, barrier, results)) for arg in args
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=TIMEOUT) for _ in children]
    for child in children:
        child.join(TIMEOUT)
    return outcomes


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
