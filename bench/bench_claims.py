"""Benchmark 4: worker processes draining a queue of pending runs with ``claim_next_run``.

Per backend, a fresh database gets 10,000 pending runs (bulk-inserted); N spawned processes
(PostgreSQL 8, SQLite file 4, MariaDB 8) each open their own connection, wait at a barrier, then
call ``claim_next_run`` until it returns None. The clock runs from the barrier to the last
worker's report. Verified after each run: no run claimed twice, every run claimed, and the
database agrees (every run ``uploading`` with the ``worker_id`` of the process that got it).
Side by side, one process drains a queue of 500 runs, and the table gives the ratio. MariaDB
(8 processes) runs with ``--backends postgresql,sqlite-file,mariadb`` (it would push the default
run past three minutes).

    .venv/bin/python bench/bench_claims.py [--quick] [--runs 10000] [--backends ...]
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

from common import report  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from cosmos_models import DatabaseConnection, claim_next_run, create_prompt  # noqa: E402
from cosmos_models.db.migrate import upgrade  # noqa: E402
from cosmos_models.db.tables import RUNS  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
PROCESSES = {"postgresql": 8, "sqlite-file": 4, "mariadb": 8}
BASELINE_RUNS = 500
TIMEOUT = 600


def _worker(url: str, worker_id: str, barrier: Any, results: Any) -> None:
    """One worker process: connect, wait for the others, claim until the queue is empty."""
    conn = DatabaseConnection(url)
    try:
        with conn.engine.connect():
            pass  # the connection is made before the clock starts
        barrier.wait(TIMEOUT)
        claimed = []
        while (run := claim_next_run(conn, worker_id)) is not None:
            claimed.append(run.id)
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
    return ids


def drain(location: str, processes: int) -> tuple[float, dict[str, list[str]]]:
    """Start ``processes`` spawned workers together; return (seconds, claims per worker)."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(processes + 1)
    results = spawn.Queue()
    workers = [
        spawn.Process(target=_worker, args=(location, f"worker-{index}", barrier, results))
        for index in range(processes)
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


def verify(location: str, ids: list[str], claims: dict[str, list[str]]) -> int:
    """Fail loudly unless every run was claimed exactly once; return the duplicate count (0)."""
    claimed = [run_id for got in claims.values() for run_id in got]
    duplicates = sum(seen - 1 for seen in Counter(claimed).values() if seen > 1)
    if duplicates or sorted(claimed) != ids:
        raise SystemExit(
            f"claims are wrong: {duplicates} duplicates, {len(set(ids) - set(claimed))} unclaimed"
        )
    holder = {run_id: worker_id for worker_id, got in claims.items() for run_id in got}
    with DatabaseConnection(location) as conn, conn.engine.connect() as connection:
        stored = connection.execute(select(RUNS.c.id, RUNS.c.status, RUNS.c.worker_id)).all()
    wrong = [
        row.id for row in stored if row.status != "uploading" or holder[row.id] != row.worker_id
    ]
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
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 runs")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument(
        "--backends", default="postgresql,sqlite-file", help="add mariadb (about 90 s more)"
    )
    args = parser.parse_args()
    runs = 2_000 if args.quick else args.runs
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
