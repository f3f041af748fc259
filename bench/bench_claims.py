"""Benchmark 4: worker processes draining a queue of pending runs, alone and beside peers.

Scaling: per backend, a fresh database gets 10,000 pending runs (bulk-inserted); N spawned
processes (PostgreSQL 8, SQLite file 4, MariaDB 8) each open their own connection, wait at a
barrier, then call ``claim_next_run`` until it returns None. The clock runs from the barrier to
the last worker's report. Verified after each run: no run claimed twice, every run claimed, and
the database agrees (every run with the ``worker_id`` of the process that got it). Side by side,
one process drains a queue of 500 runs, and the table gives the ratio. MariaDB (8 processes) runs
with ``--backends postgresql,sqlite-file,mariadb``.

Peers (PostgreSQL, 4 clients, claim + complete of every run, measured in the same run):
pgbench running ``claims_pgbench.sql`` (the same UPDATE … RETURNING claim, then the completing
UPDATE; skipped with a note where pgbench is absent), PgQueuer with 4 consumer processes at batch
1 and 10 (the ``bench`` extra; skipped with a note if not installed), and ours two ways, 4
processes each: "two calls", ``claim_next_runs(limit=1 or 10, to="running")`` then completing
what it took (``transition(…, "completed")`` at batch 1, one ``transition_runs`` per batch at
10); "hand-off", a first claim, then one ``complete_and_claim_runs`` per batch, which commits the
batch's completion and the next claim together (one statement, one round trip, one commit).
Ratios: the hand-off / pgbench (target >= 0.5), the hand-off / PgQueuer at the same batch
(target >= 1.0), and the hand-off / two calls.

The same work per job on every side: nothing but taking the job and marking it done. Not the
same durability: ours returns once the completion is committed; PgQueuer's completions are
buffered in memory (``JobStatusLogBuffer``, flushed once ``batch_size`` of them wait, or every
0.1 s, by a task of its own contending with the next dequeue for the consumer's one connection),
so a consumer dequeues its next batch before the last one's completion is sent, and a crash
loses completions (the jobs run again after their heartbeat times out). Per batch both sides
then send two statements; ours one when it hands off.

    .venv/bin/python bench/bench_claims.py [--quick] [--runs 10000] [--backends ...] [--no-peers]
"""

import argparse
import contextlib
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from claims_peers import (  # noqa: E402
    CLIENTS,
    PGBENCH_SLACK,
    pgbench_path,
    pgqueuer_consumer,
    pgqueuer_fill,
    pgqueuer_leftovers,
    pgqueuer_reason,
    pgqueuer_version,
    run_pgbench,
)
from common import record_ratio, report  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    claim_next_runs,
    complete_and_claim_runs,
    create_prompt,
    transition,
    transition_runs,
)
from cosmos_models.db.migrate import upgrade  # noqa: E402
from cosmos_models.db.tables import RUNS  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
PROCESSES = {"postgresql": 8, "sqlite-file": 4, "mariadb": 8}
BASELINE_RUNS = 500
TWO_CALLS = "ours, two calls"
HAND_OFF = "ours, hand-off"
TIMEOUT = 600


def _worker(
    url: str, worker_id: str, batch: int, hand_off: bool, barrier: Any, results: Any
) -> None:
    """One worker process: connect, wait for the others, claim until the queue is empty.

    ``batch=0``: claim one at a time (``claim_next_runs`` with limit 1) and stop there; else
    claim ``batch`` at a time into ``running`` and complete them: with ``hand_off``, each batch
    by the ``complete_and_claim_runs`` that claims the next; else ``transition`` for a batch of
    one, one ``transition_runs`` call for a larger batch.
    """
    conn = DatabaseConnection(url)
    try:
        with conn.engine.connect():
            pass  # the connection is made before the clock starts
        barrier.wait(TIMEOUT)
        claimed = []
        if not batch:
            while runs := claim_next_runs(conn, worker_id):
                claimed.append(runs[0].id)
        elif hand_off:
            runs = claim_next_runs(conn, worker_id, limit=batch, to="running")
            while runs:
                ids = [run.id for run in runs]
                claimed.extend(ids)
                # The last call completes the last batch and finds the queue empty.
                runs = complete_and_claim_runs(conn, worker_id, ids, limit=batch, to="running")
        while batch and not hand_off:
            runs = claim_next_runs(conn, worker_id, limit=batch, to="running")
            if not runs:
                break
            ids = [run.id for run in runs]
            if batch == 1:
                transition(conn, ids[0], "completed", expected_from="running")
            else:
                transition_runs(conn, ids, "completed", expected_from="running")
            claimed.extend(ids)
        results.put((worker_id, claimed, None))
    except Exception as exc:  # reported: an error must fail the benchmark, not hang it
        results.put((worker_id, [], f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite-file":
        with tempfile.TemporaryDirectory() as directory:
            yield str(Path(directory) / "claims.db")
    else:
        with server_database(backend) as url:
            yield url.render_as_string(hide_password=False)


def fill_queue(location: str, runs: int) -> list[str]:
    """A migrated database holding ``runs`` pending runs, oldest first; return their ids."""
    upgrade(location, backup=False)
    with DatabaseConnection(location) as conn:
        prompt = create_prompt(
            conn, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
        )
        ids = [f"rs_{index:06d}" for index in range(runs)]
        rows = [
            {
                "id": run_id,
                "prompt_id": prompt.id,
                "model_type": "transfer",
                "status": "pending",
                "execution_config": {},
                "outputs": {},
                "metadata": {},
                "created_at": T0 + timedelta(milliseconds=index),
                "updated_at": T0 + timedelta(milliseconds=index),
            }
            for index, run_id in enumerate(ids)
        ]
        with conn.engine.begin() as connection:
            connection.execute(insert(RUNS), rows)
        analyze(conn.engine, "runs")
    return ids


def analyze(engine: Any, table: str) -> None:
    """Collect the planner's statistics of a just-filled queue (PostgreSQL; else nothing).

    A live queue has them (autovacuum analyzes a table after enough rows change); without them
    the planner takes a table of 10,000 fresh rows for nearly empty and may walk every pending
    run for each claim. Every contender's queue is analyzed the same way.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"ANALYZE {table}")


def drain(
    location: str, processes: int, batch: int = 0, hand_off: bool = False
) -> tuple[float, dict[str, list[str]]]:
    """Start ``processes`` spawned workers together; return (seconds, claims per worker)."""
    return together(
        [(_worker, (location, f"worker-{index}", batch, hand_off)) for index in range(processes)]
    )


def together(jobs: list[tuple[Any, tuple[Any, ...]]]) -> tuple[float, dict[str, list[str]]]:
    """Start one spawned process per ``(target, args)``; clock them from the barrier.

    Each target is called as ``target(*args, barrier, results)`` and puts ``(name, taken,
    error)`` on ``results``. Returns (seconds, what each took by name).
    """
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(len(jobs) + 1)
    results = spawn.Queue()
    workers = [
        spawn.Process(target=target, args=(*args, barrier, results)) for target, args in jobs
    ]
    for worker in workers:
        worker.start()
    barrier.wait(TIMEOUT)
    start = time.perf_counter()
    reports = [results.get(timeout=TIMEOUT) for _ in workers]
    seconds = time.perf_counter() - start
    for worker in workers:
        worker.join(TIMEOUT)
    errors = [f"{worker_id}: {error}" for worker_id, _, error in reports if error]
    if errors:
        raise SystemExit("claim workers failed:\n" + "\n".join(errors))
    return seconds, {worker_id: claimed for worker_id, claimed, _ in reports}


def exactly_once(ids: list[str], claims: dict[str, list[str]]) -> int:
    """Fail loudly unless every id was taken exactly once; return the duplicate count (0)."""
    claimed = [run_id for got in claims.values() for run_id in got]
    duplicates = sum(seen - 1 for seen in Counter(claimed).values() if seen > 1)
    if duplicates or sorted(claimed) != sorted(ids):
        raise SystemExit(
            f"claims are wrong: {duplicates} duplicates, {len(set(ids) - set(claimed))} unclaimed"
        )
    return duplicates


def verify(
    location: str, ids: list[str], claims: dict[str, list[str]], status: str = "uploading"
) -> int:
    """``exactly_once``, and the database agrees: each run in ``status``, held by its worker."""
    duplicates = exactly_once(ids, claims)
    holder = {run_id: worker_id for worker_id, got in claims.items() for run_id in got}
    with DatabaseConnection(location) as conn, conn.engine.connect() as connection:
        stored = connection.execute(select(RUNS.c.id, RUNS.c.status, RUNS.c.worker_id)).all()
    wrong = [row.id for row in stored if row.status != status or holder[row.id] != row.worker_id]
    if wrong:
        raise SystemExit(f"the database disagrees with the workers on {len(wrong)} runs")
    return duplicates


def measure(backend: str, runs: int) -> list[dict[str, Any]]:
    rows = []
    for processes, queue in [(1, min(BASELINE_RUNS, runs)), (PROCESSES[backend], runs)]:
        with database(backend) as location:
            ids = fill_queue(location, queue)
            seconds, claims = drain(location, processes)
            duplicates = verify(location, ids, claims)
        per_worker = sorted(len(got) for got in claims.values())
        rows.append(
            {
                "backend": backend,
                "processes": processes,
                "runs": queue,
                "seconds": seconds,
                "claims_per_s": queue / seconds,
                "duplicates": duplicates,
                "unclaimed": 0,
                "per_worker": f"{per_worker[0]}-{per_worker[-1]}",
            }
        )
        print(f"{backend}: {processes} processes claimed {queue:,} runs in {seconds:.2f} s")
    rows[1]["vs_1_process"] = rows[1]["claims_per_s"] / rows[0]["claims_per_s"]
    rows[0]["vs_1_process"] = 1.0
    record_ratio(f"claims/{backend}/{rows[1]['processes']} processes vs 1", rows[1]["vs_1_process"])
    return rows


def measure_peers(runs: int) -> list[dict[str, Any]]:
    """Claim + complete with 4 clients on PostgreSQL: pgbench, PgQueuer and ours, batch 1 and 10."""
    rows: list[dict[str, Any]] = []
    rates: dict[tuple[str, int], float] = {}

    def row(what: str, batch: int, seconds: float, duplicates: int, note: str = "") -> None:
        rates[what, batch] = runs / seconds
        rows.append(
            {
                "what": what,
                "clients": CLIENTS,
                "batch": batch,
                "runs": runs,
                "seconds": seconds,
                "per_second": runs / seconds,
                "duplicates": duplicates,
                "lost": 0,
                "note": note,
            }
        )
        print(f"{what}, batch {batch}: {runs:,} claims + completions in {seconds:.2f} s")

    pgbench = pgbench_path()
    if pgbench is None:
        print("pgbench skipped: not on PATH nor in /usr/lib/postgresql/*/bin")
    else:
        with server_database("postgresql") as url:
            location = url.render_as_string(hide_password=False)
            ids = fill_queue(location, runs + PGBENCH_SLACK)
            tps = run_pgbench(pgbench, url, runs)
            with DatabaseConnection(location) as conn, conn.engine.connect() as connection:
                counts = dict(
                    connection.execute(
                        select(RUNS.c.status, func.count()).group_by(RUNS.c.status)
                    ).all()
                )
            if counts != {"completed": runs, "pending": PGBENCH_SLACK}:
                raise SystemExit(f"pgbench left the runs wrong: {counts} ({len(ids)} loaded)")
            row("pgbench script", 1, runs / tps, 0, "tps without connection time")
    reason = pgqueuer_reason()
    for batch in (1, 10):
        if reason is None:
            with server_database("postgresql") as url:
                dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
                ids = pgqueuer_fill(dsn, runs)
                seconds, taken = together(
                    [(pgqueuer_consumer, (dsn, f"consumer-{i}", batch)) for i in range(CLIENTS)]
                )
                duplicates = exactly_once(ids, taken)
                if left := pgqueuer_leftovers(dsn):
                    raise SystemExit(f"PgQueuer left {left} jobs queued")
            row(f"PgQueuer {pgqueuer_version()}", batch, seconds, duplicates)
        for what, hand_off in ((TWO_CALLS, False), (HAND_OFF, True)):
            with server_database("postgresql") as url:
                location = url.render_as_string(hide_password=False)
                ids = fill_queue(location, runs)
                seconds, claims = drain(location, CLIENTS, batch, hand_off)
                duplicates = verify(location, ids, claims, "completed")
            row(what, batch, seconds, duplicates)
    if reason is not None:
        print(f"PgQueuer skipped: {reason}")
    targets = [("pgbench script", 1, 0.5)] + [
        (what, batch, 1.0) for what, batch in rates if what.startswith("PgQueuer")
    ]
    targets += [(TWO_CALLS, batch, None) for batch in (1, 10)]
    for what, batch, target in targets:
        if (what, batch) in rates:
            ratio = rates[HAND_OFF, batch] / rates[what, batch]
            rows.append(
                {"what": f"hand-off / {what}", "batch": batch, "ratio": ratio, "target": target}
            )
            verdict = "" if target is None else f" (target >= {target}x: "
            verdict += "" if target is None else ("met)" if ratio >= target else "MISSED)")
            if target is not None:
                record_ratio(f"claims/postgresql/ours vs {what.split()[0]} batch {batch}", ratio)
            print(f"hand-off / {what} at batch {batch}: {ratio:.2f}x{verdict}")
    return rows


PEER_COLUMNS = ["what", "clients", "batch", "runs", "seconds", "per_second", "duplicates"]
PEER_COLUMNS += ["lost", "ratio", "target", "note"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 runs")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument(
        "--backends", default="postgresql,sqlite-file", help="add mariadb (about 90 s more)"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip pgbench and PgQueuer")
    args = parser.parse_args()
    runs = 5_000 if args.quick else args.runs
    if not args.no_peers:
        if reason := server_reason("postgresql"):
            print(f"peers skipped: {reason}")
        else:
            report(
                "claims_vs_peers",
                measure_peers(runs),
                PEER_COLUMNS,
            )
    rows: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        if backend != "sqlite-file" and (reason := server_reason(backend)):
            print(f"{backend} skipped: {reason}")
            continue
        rows.extend(measure(backend, runs))
    report(
        "claims",
        rows,
        [
            "backend",
            "processes",
            "runs",
            "seconds",
            "claims_per_s",
            "vs_1_process",
            "duplicates",
            "unclaimed",
            "per_worker",
        ],
    )


if __name__ == "__main__":
    main()
