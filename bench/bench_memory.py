"""Benchmark: ``:memory:`` as a WAL file on /dev/shm against SQLite's own memory database.

``before`` rebuilds the earlier ``:memory:`` (one StaticPool connection to ``sqlite://``, the
same pragmas and ``BEGIN`` handling); ``now`` is ``DatabaseConnection(":memory:")``; ``file`` is a
SQLite file in the temp directory, for reference. Each does 2,000 ``record_progress`` calls (one
transaction each) and one 10,000-event ``record_progress_batch``, taking turns round by round.
Prints events/s and the ratio to ``before``; writes bench/results/memory.json and records
``now``'s two ratios for ``make bench-check``.

    .venv/bin/python bench/bench_memory.py [--rounds 3] [--quick]
"""

import argparse
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import best_of, record_ratio, report  # noqa: E402
from sqlalchemy import create_engine, event  # noqa: E402
from sqlalchemy.pool import StaticPool  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    create_prompt,
    create_run,
    record_progress,
    record_progress_batch,
)
from cosmos_models.db.connection import _session_factory  # noqa: E402
from cosmos_models.models.values import dumps_json  # noqa: E402

T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)


def before() -> DatabaseConnection:
    """The earlier ``:memory:``: one connection to SQLite's memory database, kept by StaticPool."""
    db = DatabaseConnection(":memory:")
    db.close()  # drops the file database it made; the attributes below replace it
    engine = create_engine(
        "sqlite://",
        poolclass=StaticPool,
        json_serializer=dumps_json,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writer = connection.get_execution_options().get("cosmos_writer", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    db.engine = engine
    db.SessionLocal = _session_factory(engine.execution_options(cosmos_writer=True))
    db._read_session = _session_factory(engine)
    db._closed = False
    return db


def workloads(db: DatabaseConnection, calls: int, batch: int) -> tuple[Callable[[], int], ...]:
    db.create_tables()
    prompt = create_prompt(
        db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
    )
    run_id = create_run(db, prompt.id).id
    events = [
        {
            "run_id": run_id,
            "stage": "inference",
            "percentage": (i % 1000) / 10,
            "message": f"frame {i}",
            "timestamp": T0 + timedelta(microseconds=i),
        }
        for i in range(batch)
    ]

    def one_by_one() -> int:
        for i in range(calls):
            record_progress(db, run_id, "inference", (i % 1000) / 10, f"frame {i}")
        return calls

    def in_a_batch() -> int:
        return record_progress_batch(db, events)

    return one_by_one, in_a_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="500 calls, batches of 2,500")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.batch = 500, 2_500
    with tempfile.TemporaryDirectory() as directory:
        databases = {
            "before": before(),
            "now": DatabaseConnection(":memory:"),
            "file": DatabaseConnection(Path(directory) / "bench.db"),
        }
        work = {name: workloads(db, args.calls, args.batch) for name, db in databases.items()}
        singles = best_of({n: w[0] for n, w in work.items()}, rounds=args.rounds)
        batches = best_of({n: w[1] for n, w in work.items()}, rounds=args.rounds)
        for db in databases.values():
            db.close()
    rows = [
        {
            "database": name,
            "record_progress/s": singles[name],
            "vs before": singles[name] / singles["before"],
            "batch events/s": batches[name],
            "batch vs before": batches[name] / batches["before"],
        }
        for name in databases
    ]
    report("memory", rows, list(rows[0]))
    record_ratio("memory/record_progress now vs before", singles["now"] / singles["before"])
    record_ratio("memory/batch now vs before", batches["now"] / batches["before"])


if __name__ == "__main__":
    main()
