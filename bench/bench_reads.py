"""Benchmark: the package's reads against the same SQL through the raw driver, per backend.

For ``get_run``, a ``list_runs`` page (first, and the next by cursor), ``progress_since`` (a page
of 100 events) and ``latest_progress`` (1,000 runs), the SQL the package sends to the driver's
cursor is captured from one call, then replayed by the driver alone (sqlite3, psycopg, PyMySQL) on
a connection held open in autocommit, as the package's reads run, fetched into tuples (the
package's own conversions, checks and connection handling are its cost). Each read and its replay
take turns, each first in half the calls; medians are compared.
Target: the package's call costs at most 1.5x the driver's (its speed ≥ 0.67 of the driver's):
in CPU time on SQLite (all its work is in this process), in wall time on the servers (theirs
is not); both are printed. CPU time is only this process's: on the servers it leaves out the
server's work, so ``cpu_vs_raw`` there shows the client side alone.
Each ratio is recorded for ``make bench-check`` (driver time / ours: higher is better).

    .venv/bin/python bench/bench_reads.py [--quick] [--backends sqlite-file,postgresql,mariadb]
"""

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import interleaved_latencies, median_p95_ms, record_ratio, report  # noqa: E402
from sqlalchemy import URL, update  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    Prompt,
    Run,
    get_run,
    latest_progress,
    list_runs,
    progress_since,
    record_progress_batch,
)
from cosmos_models.db import lean  # noqa: E402
from cosmos_models.db.tables import RUNS as RUN_TABLE  # noqa: E402
from cosmos_models.services import progress_queries  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

T0 = datetime(2025, 1, 4, 12, 0, tzinfo=UTC)
RUNS = 2_000
ASKED = 1_000
PAGE = 50
EVENTS_PAGE = 100
TIMELINE = 1_000
TARGET = 1.5
STATUSES = ["completed"] * 6 + ["failed", "running", "pending", "cancelled"]


@contextlib.contextmanager
def database(backend: str) -> Iterator[URL | str]:
    if backend == "sqlite-file":
        with tempfile.TemporaryDirectory() as directory:
            yield str(Path(directory) / "reads.db")
    else:
        with server_database(backend) as url:
            yield url


def populate(db: DatabaseConnection) -> list[str]:
    """RUNS runs with JSON documents; two events for each of the first ASKED runs, a timeline."""
    ids = [f"rs_{index:06d}" for index in range(RUNS)]
    with db.get_session() as session:
        prompt = Prompt(model_type="transfer", prompt_text="city", inputs={}, parameters={})
        session.add(prompt)
        session.flush()
        session.add_all(
            Run(
                id=run_id,
                prompt_id=prompt.id,
                model_type="transfer",
                status="running",
                execution_config={"gpu_node": f"gpu-{index % 8:03d}", "image": "cosmos:1.2"},
                outputs={"video": f"/outputs/{run_id}.mp4", "frames": 121},
                run_metadata={"tags": ["bench", "reads"], "priority": index % 3},
                created_at=T0 + timedelta(seconds=index),
                updated_at=T0 + timedelta(seconds=index),
            )
            for index, run_id in enumerate(ids)
        )
    events = [
        {"run_id": run_id, "stage": stage, "percentage": pct, "message": f"{stage} {run_id}"}
        for run_id in ids[:ASKED]
        for stage, pct in (("uploading", 10.0), ("inference", 55.5))
    ]
    events += [
        {
            "run_id": ids[0],
            "stage": "inference",
            "percentage": (index % 1000) / 10,
            "message": f"frame {index}",
            "timestamp": T0 + timedelta(milliseconds=index),
        }
        for index in range(TIMELINE)
    ]
    record_progress_batch(db, events)  # runs take events until they are final
    with db.begin() as connection:
        for index, status in enumerate(STATUSES):
            chosen = ids[index :: len(STATUSES)]
            connection.execute(
                update(RUN_TABLE)
                .where(RUN_TABLE.c.id.in_(chosen))
                .values(status=status, updated_at=T0)
            )
    return ids


def captured_sql(call: Callable[[], object]) -> tuple[str, Any, dict[str, Any]]:
    """The one SELECT a call sends to the driver's cursor (the package's lean reads use one),
    with its parameters and the options the call gives ``execute`` (psycopg's binary=True)."""
    sent: list[tuple[str, Any, dict[str, Any]]] = []
    real = lean.fetch

    def recording(
        db: DatabaseConnection,
        sql: str,
        parameters: Any,
        *,
        describe: bool = False,
        options: dict[str, Any] | None = None,
    ) -> tuple[list[Any], Any]:
        sent.append((sql, parameters, options or {}))
        return real(db, sql, parameters, describe=describe, options=options)

    modules = (lean, progress_queries)
    for module in modules:
        module.fetch = recording  # type: ignore[attr-defined]
    try:
        call()
    finally:
        for module in modules:
            module.fetch = real  # type: ignore[attr-defined]
    assert len(sent) == 1, sent
    return sent[0]


def measure(backend: str, calls: int) -> list[dict[str, Any]]:
    print(f"{backend}: {RUNS:,} runs, {ASKED * 2 + TIMELINE:,} events")
    with database(backend) as location:
        db = DatabaseConnection(location)
        try:
            db.create_tables()
            ids = populate(db)
            return _compare(backend, db, ids, calls)
        finally:
            db.close()


def _compare(
    backend: str, db: DatabaseConnection, ids: list[str], calls: int
) -> list[dict[str, Any]]:
    asked = ids[:ASKED]
    cursor = list_runs(db, status="completed", limit=PAGE).next_cursor
    ours: dict[str, Callable[[], object]] = {
        "get_run": lambda: get_run(db, ids[RUNS // 2]),
        f"list_runs page 1 ({PAGE})": lambda: list_runs(db, status="completed", limit=PAGE),
        f"list_runs page 2 ({PAGE})": lambda: list_runs(
            db, status="completed", limit=PAGE, cursor=cursor
        ),
        f"progress_since ({EVENTS_PAGE})": lambda: progress_since(
            db, ids[0], after=500, limit=EVENTS_PAGE
        ),
        f"latest_progress ({ASKED:,} runs)": lambda: latest_progress(db, asked),
    }
    sql = {name: captured_sql(call) for name, call in ours.items()}
    # The driver alone on a connection held open, in the mode the package reads in (autocommit:
    # the SELECT is the whole exchange, no BEGIN or ROLLBACK on either side).
    pooled = db.engine.raw_connection()
    pooled.detach()
    raw = pooled.dbapi_connection
    db.engine.dialect.set_isolation_level(raw, "AUTOCOMMIT")

    def driver(statement: str, parameters: Any, options: dict[str, Any]) -> Callable[[], object]:
        def call() -> int:
            cursor = raw.cursor()
            cursor.execute(statement, parameters, **options)
            found = cursor.fetchall()
            cursor.close()
            return len(found)

        return call

    # Each read against its replay alone, taking turns, and each side first in half the rounds:
    # a call right after a long one (a 1,000-row read) pays for it (the server's process and
    # the caches are still busy with it), so a fixed order would charge one side only.
    samples: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        for name, call in ours.items():
            pair = {name: call, f"{name} raw": driver(*sql[name])}
            for order in (list(pair), list(reversed(pair))):
                turns = {key: pair[key] for key in order}
                rounds = dict.fromkeys(turns, calls // 2)
                for found, timer in ((samples, time.perf_counter), (cpu, time.process_time)):
                    for key, values in interleaved_latencies(turns, rounds, timer).items():
                        found.setdefault(key, []).extend(values)
    finally:
        pooled.close()
    # SQLite works in this process: its CPU time is the whole cost, and unlike wall time it is
    # not inflated when a loaded machine preempts the longer of two calls (see common.py).
    clock = time.process_time if backend == "sqlite-file" else time.perf_counter
    rows = []
    for name in ours:
        median, p95 = median_p95_ms(samples[name])
        raw_median, _ = median_p95_ms(samples[f"{name} raw"])
        cpu_ratio = statistics.median(cpu[name]) / statistics.median(cpu[f"{name} raw"])
        ratio = cpu_ratio if clock is time.process_time else median / raw_median
        record_ratio(f"reads/{backend}/{name.split(' (')[0]}", 1 / ratio)
        rows.append(
            {
                "backend": backend,
                "read": name,
                "calls": calls,
                "median_ms": median,
                "p95_ms": p95,
                "raw_median_ms": raw_median,
                "wall_vs_raw": median / raw_median,
                "cpu_vs_raw": cpu_ratio,
                "target": ("met" if ratio <= TARGET else "MISSED")
                + (" (cpu)" if clock is time.process_time else " (wall)"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="150 calls each instead of 300")
    parser.add_argument("--backends", default="sqlite-file,postgresql,mariadb")
    args = parser.parse_args()
    calls = 150 if args.quick else 300
    rows: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        if backend != "sqlite-file" and (reason := server_reason(backend)):
            print(f"{backend} skipped: {reason}")
            continue
        rows.extend(measure(backend, calls))
    report(
        "reads",
        rows,
        [
            "backend",
            "read",
            "calls",
            "median_ms",
            "p95_ms",
            "raw_median_ms",
            "wall_vs_raw",
            "cpu_vs_raw",
            "target",
        ],
    )
    print(f"target: each read costs at most {TARGET}x the same SQL through the raw driver")


if __name__ == "__main__":
    main()
