"""Benchmark: record_progress_batch against the driver's own executemany, per backend.

Both sides insert the same events into the same table in one transaction; the driver side gets
values already in storage form (it validates nothing). Prints speed ratios (driver time divided
by ours: 1.0 is driver speed, the target is ≥ 0.6) and writes bench/results/progress.json. On
PostgreSQL the driver is measured twice: psycopg's ``executemany`` and ``COPY`` of ready tuples
(what record_progress_batch uses for large batches). ``--threshold-scan`` times COPY against
the multi-row INSERT per batch size, which is how ingest.COPY_THRESHOLD was chosen.

    .venv/bin/python bench/bench_progress.py [--events 20000] [--repeat 7] [--cpu] [--quick]
    .venv/bin/python bench/bench_progress.py --threshold-scan
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import RESULTS, record_ratio  # noqa: E402
from sqlalchemy import URL, delete, update  # noqa: E402

from cosmos_models import DatabaseConnection, create_prompt, create_run, record_progress_batch  # noqa: E402
from cosmos_models.db.tables import PROGRESS, RUNS  # noqa: E402
from cosmos_models.services import ingest  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)


@contextlib.contextmanager
def database(backend: str) -> Iterator[URL | str]:
    if backend == "sqlite-file":
        with tempfile.TemporaryDirectory() as directory:
            yield str(Path(directory) / "bench.db")
    else:
        with server_database(backend) as url:
            yield url


def interleaved_best_of(
    repeat: int,
    setup: Callable[[], None],
    *contenders: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Best time of each contender, taking turns so that machine noise hits all alike.

    Wall time by default; ``--cpu`` passes ``time.process_time``: steadier on a loaded machine
    and, for SQLite (all work in-process), close to the whole cost; not for the server
    backends, whose work it does not see.
    """
    best = [float("inf")] * len(contenders)
    for _ in range(repeat):
        for index, work in enumerate(contenders):
            setup()
            start = clock()
            work()
            best[index] = min(best[index], clock() - start)
    return best


def measure(
    backend: str, events: int, repeat: int, clock: Callable[[], float] = time.perf_counter
) -> list[dict[str, Any]]:
    with database(backend) as location:
        db = DatabaseConnection(location)
        db.create_tables()
        prompt = create_prompt(
            db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
        )
        run_id = create_run(db, prompt.id).id
        stamps = [T0 + timedelta(microseconds=i) for i in range(events)]
        batch = [
            {
                "run_id": run_id,
                "stage": "inference",
                "percentage": (i % 1000) / 10,
                "message": f"frame {i}",
                "timestamp": stamps[i],
            }
            for i in range(events)
        ]
        sqlite = backend.startswith("sqlite")
        placeholder = "?" if sqlite else "%s"
        sql = (
            "INSERT INTO progress (run_id, seq, stage, percentage, message, timestamp) "
            f"VALUES ({', '.join([placeholder] * 6)})"
        )
        raw_rows = [
            (
                run_id,
                i + 1,  # the driver is handed its seqs; ours numbers them under the run's lock
                "inference",
                (i % 1000) / 10,
                f"frame {i}",
                # Storage form: naive UTC text on SQLite, aware on PostgreSQL, naive on MariaDB.
                stamps[i].replace(tzinfo=None).isoformat(" ")
                if sqlite
                else stamps[i]
                if backend == "postgresql"
                else stamps[i].replace(tzinfo=None),
            )
            for i in range(events)
        ]

        def empty() -> None:
            with db.engine.begin() as connection:
                connection.execute(delete(PROGRESS))
                connection.execute(update(RUNS).values(progress_count=0, latest_seq=0))

        def driver() -> None:
            raw = db.engine.raw_connection()
            try:
                cursor = raw.cursor()
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(sql, raw_rows)
                raw.commit() if not sqlite else cursor.execute("COMMIT")
            finally:
                raw.close()

        def copy() -> None:
            # PostgreSQL's fastest way in: COPY of ready tuples (what large batches go through).
            raw = db.engine.raw_connection()
            try:
                with raw.cursor() as cursor, cursor.copy(COPY_SQL) as stream:  # type: ignore[attr-defined]
                    for row in raw_rows:
                        stream.write_row(row)
                raw.commit()
            finally:
                raw.close()

        def ours() -> None:
            record_progress_batch(db, batch)

        drivers = {"executemany": driver}
        if backend == "postgresql":
            drivers["copy"] = copy
        *driver_times, ours_s = interleaved_best_of(
            repeat, empty, *drivers.values(), ours, clock=clock
        )
        empty()
        db.close()
    return [
        {
            "backend": backend,
            "driver": name,
            "events": events,
            "driver_s": round(driver_s, 4),
            "record_progress_batch_s": round(ours_s, 4),
            "ratio": round(driver_s / ours_s, 3),
        }
        for name, driver_s in zip(drivers, driver_times, strict=True)
    ]


COPY_SQL = "COPY progress (run_id, seq, stage, percentage, message, timestamp) FROM STDIN"


def threshold_scan(sizes: list[int], repeat: int) -> None:
    """PostgreSQL: record_progress_batch with COPY vs with the multi-row INSERT, per batch size."""
    with database("postgresql") as location:
        db = DatabaseConnection(location)
        db.create_tables()
        prompt = create_prompt(
            db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
        )
        run_id = create_run(db, prompt.id).id
        for size in sizes:
            batch = [
                {"run_id": run_id, "stage": "s", "percentage": 1.0, "message": f"m {i}"}
                for i in range(size)
            ]

            def with_copy(batch: list[dict[str, Any]] = batch) -> None:
                ingest.COPY_THRESHOLD = 1  # type: ignore[misc]
                record_progress_batch(db, batch)

            def with_insert(batch: list[dict[str, Any]] = batch) -> None:
                ingest.COPY_THRESHOLD = 10**9  # type: ignore[misc]
                record_progress_batch(db, batch)

            copy_s, insert_s = interleaved_best_of(repeat, lambda: None, with_copy, with_insert)
            print(
                f"  batch {size:6}: COPY {copy_s * 1000:7.2f} ms, INSERT {insert_s * 1000:7.2f} ms"
            )
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--threshold-scan", action="store_true", help="time COPY vs INSERT by batch size (PG)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="time CPU of this process (SQLite on a busy machine)"
    )
    parser.add_argument("--quick", action="store_true", help="5,000 events, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat = 5_000, 3
    clock = time.process_time if args.cpu else time.perf_counter
    if args.threshold_scan:
        threshold_scan([1, 10, 50, 100, 500, 2000], args.repeat)
        return
    results: list[dict[str, Any]] = []
    for backend in ("sqlite-file", "postgresql", "mariadb"):
        if backend != "sqlite-file" and (reason := server_reason(backend)):
            print(f"{backend:12} skipped: {reason}")
            continue
        for result in measure(backend, args.events, args.repeat, clock):
            results.append({**result, "clock": "cpu" if args.cpu else "wall"})
            name = f"progress/{backend}/record_progress_batch vs {result['driver']}"
            record_ratio(name, result["ratio"])
            print(
                f"{backend:12} {result['events']} events: driver {result['driver']} "
                f"{result['driver_s']:.3f}s, record_progress_batch "
                f"{result['record_progress_batch_s']:.3f}s, ratio {result['ratio']:.2f} "
                "(target ≥ 0.6)"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "progress.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
