"""Failover on a real cluster: writers and claimers run while the primary is killed and the
replica promoted; every commit they were told of is on the new primary, none twice.

Replication is synchronous here, so "committed" implies "on the replica". With asynchronous
replication PostgreSQL may lose the last commits on failover; that is the server's trade-off,
not something a client can repair.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select

from cosmos_models import (
    CommitUnknownError,
    DatabaseConnection,
    DatabaseError,
    claim_next_run,
    create_prompt,
    create_run,
    record_progress,
    transition,
)
from cosmos_models.db.tables import PROGRESS, RUNS
from tests.pg_cluster import PRIMARY, REPLICA
from tests.replica_cluster import make_cluster

DATABASE = "cosmos_failover"
ORDER = ["pending", "uploading", "running", "completed"]


@dataclass
class Ledger:
    """What the threads were told: committed, or outcome unknown."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: list[str] = field(default_factory=list)
    events: list[tuple[str, int]] = field(default_factory=list)
    claims: dict[str, list[str]] = field(default_factory=dict)  # run id -> claiming workers
    reached: dict[str, str] = field(default_factory=dict)  # run id -> last status reported
    unknown: int = 0
    unexpected: list[BaseException] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)


def _keep_working(ledger: Ledger, stop: threading.Event, step: Callable[[], None]) -> None:
    """Repeat ``step``: a commit reported is a success; unknown outcomes are never retried."""
    while not stop.is_set():
        try:
            step()
        except CommitUnknownError:
            with ledger.lock:
                ledger.unknown += 1
        except DatabaseError:
            time.sleep(0.05)  # not committed (the server is away): the next step is new work
        except BaseException as exc:
            with ledger.lock:
                ledger.unexpected.append(exc)
            return
        else:
            with ledger.lock:
                ledger.successes.append(time.monotonic())


def _writer(db: DatabaseConnection, ledger: Ledger, prompt_id: str) -> Callable[[], None]:
    def step() -> None:
        run = create_run(db, prompt_id)
        with ledger.lock:
            ledger.created.append(run.id)
        for number in range(3):
            event = record_progress(db, run.id, "inference", number * 10.0)
            with ledger.lock:
                ledger.events.append((run.id, event.seq))

    return step


def _claimer(db: DatabaseConnection, ledger: Ledger, worker: str) -> Callable[[], None]:
    def step() -> None:
        run = claim_next_run(db, worker, ["transfer"])
        if run is None:
            return
        with ledger.lock:
            ledger.claims.setdefault(run.id, []).append(worker)
            ledger.reached[run.id] = "uploading"
        for before, after in (("uploading", "running"), ("running", "completed")):
            transition(db, run.id, after, expected_from=before)
            with ledger.lock:
                ledger.reached[run.id] = after

    return step


def test_failover_keeps_every_reported_commit_once() -> None:
    cluster = make_cluster(DATABASE, synchronous=True)
    try:
        state = "SELECT sync_state FROM pg_stat_replication"
        assert cluster.execute(PRIMARY, state) == "sync"
        ledger = Ledger()
        stop = threading.Event()
        resumed: list[float] = []
        with DatabaseConnection(cluster.failover_url(DATABASE)) as db:
            queue = create_prompt(db, {"model_type": "transfer", "prompt_text": "queue",
                                       "inputs": {}, "parameters": {}})  # fmt: skip
            tracked = create_prompt(db, {"model_type": "predict", "prompt_text": "tracked",
                                         "inputs": {}, "parameters": {}})  # fmt: skip
            for _ in range(300):
                create_run(db, queue.id)
            steps = [_writer(db, ledger, tracked.id) for _ in range(2)]
            steps += [_claimer(db, ledger, f"worker-{n}") for n in range(2)]
            threads = [
                threading.Thread(target=_keep_working, args=(ledger, stop, step)) for step in steps
            ]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1.0)
                cluster.stop(PRIMARY)  # -m immediate: the machine dies
                killed = time.monotonic()
                cluster.promote(REPLICA)
                promoted = time.monotonic()
                deadline = promoted + 15
                while time.monotonic() < deadline:
                    with ledger.lock:
                        resumed = [t for t in ledger.successes if t > promoted]
                    if len(resumed) >= 20:
                        break
                    time.sleep(0.05)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
        assert not ledger.unexpected, ledger.unexpected
        assert resumed, "no work resumed on the new primary"
        print(
            f"\nfailover: promote took {promoted - killed:.2f}s, first commit "
            f"{resumed[0] - promoted:.2f}s after it; {ledger.unknown} outcome(s) unknown"
        )
        assert resumed[0] - promoted < 5
        _check_new_primary(DatabaseConnection(cluster.url(REPLICA, DATABASE)), ledger)
    finally:
        cluster.destroy()


def _check_new_primary(db: DatabaseConnection, ledger: Ledger) -> None:
    with db, db.connect() as connection:
        runs = {row.id: row for row in connection.execute(select(RUNS))}
        events = Counter(
            (row.run_id, row.seq)
            for row in connection.execute(select(PROGRESS.c.run_id, PROGRESS.c.seq))
        )
        total = connection.execute(select(func.count()).select_from(PROGRESS)).scalar_one()
    assert ledger.created
    assert ledger.events
    assert ledger.claims
    assert set(ledger.created) <= set(runs), "a run reported created is missing"
    assert all(events[event] == 1 for event in ledger.events), "a reported event is missing"
    assert sum(events.values()) == total  # (run_id, seq) identifies one event: none twice
    assert len(set(ledger.events)) == len(ledger.events)
    for run_id, workers in ledger.claims.items():
        assert workers == [runs[run_id].worker_id], f"run {run_id} claimed by {workers}"
        reached = ORDER.index(ledger.reached[run_id])
        assert ORDER.index(runs[run_id].status) >= reached, f"run {run_id} went back"
