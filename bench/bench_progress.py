"""Benchmark: record_progress_batch against the driver's own executemany, per backend.

Both sides insert the same events into the same table in one transaction; the driver side gets
values already in storage form (it validates nothing). Prints speed ratios (driver time divided
by ours: 1.0 is driver speed, the target is ≥ 0.5) and writes bench/results/progress.json.

    .venv/bin/python bench/bench_progress.py [--events 20000] [--repeat 7]
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

from sqlalchemy import URL, delete, update  # noqa: E402

from cosmos_models import DatabaseConnection, create_prompt, create_run, record_progress_batch  # noqa: E402
from cosmos_models.db.tables import PROGRESS, RUNS  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

RESULTS = ROOT / "bench" / "results"
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
    repeat: int, setup: Callable[[], None], *contenders: Callable[[], None]
) -> list[float]:
    """Best time of each contender, taking turns so that machine noise hits all alike."""
    best = [float("inf")] * len(contenders)
    for _ in range(repeat):
        for index, work in enumerate(contenders):
            setup()
            start = time.perf_counter()
            work()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def measure(backend: str, events: int, repeat: int) -> dict[str, Any]:
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

        def ours() -> None:
            record_progress_batch(db, batch)

        driver_s, ours_s = interleaved_best_of(repeat, empty, driver, ours)
        empty()
        db.close()
    return {
        "backend": backend,
        "events": events,
        "driver_s": round(driver_s, 4),
        "record_progress_batch_s": round(ours_s, 4),
        "ratio": round(driver_s / ours_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = []
    for backend in ("sqlite-file", "postgresql", "mariadb"):
        if backend != "sqlite-file" and (reason := server_reason(backend)):
            print(f"{backend:12} skipped: {reason}")
            continue
        result = measure(backend, args.events, args.repeat)
        results.append(result)
        print(
            f"{backend:12} {result['events']} events: driver {result['driver_s']:.3f}s, "
            f"record_progress_batch {result['record_progress_batch_s']:.3f}s, "
            f"ratio {result['ratio']:.2f} (target ≥ 0.5)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "progress.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
