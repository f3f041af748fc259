"""Benchmark: partitioned progress on PostgreSQL — retention by partition drop vs by DELETE, and
dashboard reads on a partitioned table vs a plain one.

Two databases get the same data: R runs and N events spread evenly over the 12 months before
the current one, plus 1% of N in the current month, bulk-inserted by SQL into the schema of
revision 0005 (a plain table); one of them is then migrated to head (0006 converts it: one
partition per month, timed), the other stays plain.

* Reads, calls interleaved (median and p95): ``latest_progress`` for 1,000 runs and
  ``progress_since`` (a page of 100 from the middle of a run), partitioned vs plain. Target: the
  partitioned table no slower than the plain one by more than 20%.
* Ingest: ``record_progress`` (one event per transaction) from one connection and from 8
  threads, and batches of 100 events, events/s, partitioned vs plain (tuple routing to the
  current month's partition).
* Retention of the N old events: ``prune(progress_older_than=…)`` drops the 12 old partitions
  (and the empty history partition) on the partitioned database, and deletes row by row (the
  package's batches of 500) on the plain one. Time, and ``pg_total_relation_size`` of progress
  (all partitions) before, after, and after a plain ``VACUUM`` (which frees space for reuse
  but does not give it back: the bloat a DELETE leaves).

Sizes are reduced by default (N = 100,000, R = 1,000); ``COSMOS_BENCH_FULL=1`` (or
``--events``) runs 1,000,000 events; ``--quick`` 50,000 events and 100 calls. Writes
bench/results/partitions.json and records the read and ingest ratios (partitioned against plain,
higher is better) for ``make bench-check``; the retention speed-up grows with N, so it is only
printed.

    .venv/bin/python bench/bench_partitions.py [--events N] [--runs R] [--calls 200] [--quick]
"""

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.common import (  # noqa: E402
    best_of,
    interleaved_latencies,
    median_p95_ms,
    record_ratio,
    report,
)
from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    latest_progress,
    progress_since,
    record_progress,
    record_progress_batch,
)
from cosmos_models.db.migrate import upgrade  # noqa: E402
from cosmos_models.db.partitions import floor_to, list_partitions  # noqa: E402
from cosmos_models.services.maintenance import prune  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

FULL_EVENTS = 1_000_000
REDUCED_EVENTS = 100_000
MONTHS = 12


def _load(db: DatabaseConnection, runs: int, events: int, start: datetime, end: datetime) -> None:
    """R runs of one prompt; ``events`` old events evenly from ``start`` to ``end``, 1% more in
    the current month; each run's seq and summary as the writers would have left them."""
    recent = max(runs, events // 100)
    with db.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prompts (id, model_type, prompt_text, inputs, parameters, created_at) "
                "VALUES ('ps_bench', 'transfer', 'bench', '{}', '{}', now())"
            )
        )
        connection.execute(
            text(
                "INSERT INTO runs (id, prompt_id, model_type, status, execution_config, outputs, "
                "metadata, created_at, updated_at) SELECT 'rs_' || lpad(k::text, 6, '0'), "
                "'ps_bench', 'transfer', 'running', '{}', '{}', '{}', now(), now() "
                "FROM generate_series(0, :runs - 1) k"
            ),
            {"runs": runs},
        )
        # Event g belongs to run g % R and is that run's (g / R + 1)th: seq follows time.
        for first, count, lo, hi in ((0, events, start, end), (events, recent, end, _now())):
            step = (hi - lo).total_seconds() / count
            connection.execute(
                text(
                    'INSERT INTO progress (run_id, stage, percentage, message, "timestamp", seq) '
                    "SELECT 'rs_' || lpad((g % :runs)::text, 6, '0'), 'inference', "
                    "(g % 100)::float, 'step ' || g, "
                    "to_timestamp(:lo + (g - :first) * :step), g / :runs + 1 "
                    "FROM generate_series(:first, :first + :count - 1) g"
                ),
                {
                    "runs": runs,
                    "lo": lo.timestamp(),
                    "step": step,
                    "first": first,
                    "count": count,
                },
            )
        connection.execute(
            text(
                "UPDATE runs SET progress_count = s.c, latest_seq = s.m FROM "
                "(SELECT run_id, count(*) AS c, max(seq) AS m FROM progress GROUP BY run_id) s "
                "WHERE runs.id = s.run_id"
            )
        )
        connection.execute(
            text(
                "UPDATE runs SET latest_progress_id = p.id, latest_stage = p.stage, "
                "latest_percentage = p.percentage, latest_message = p.message, "
                'latest_at = p."timestamp" FROM progress p '
                "WHERE p.run_id = runs.id AND p.seq = runs.latest_seq"
            )
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _size(db: DatabaseConnection) -> int:
    """Bytes of progress with its indexes, every partition included."""
    with db.connect(read_only=True) as connection:
        return int(
            connection.execute(
                text(
                    "SELECT pg_total_relation_size('progress') + COALESCE((SELECT "
                    "sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                    "WHERE inhparent = 'progress'::regclass), 0)"
                )
            ).scalar_one()
        )


def _vacuum(db: DatabaseConnection, analyze: bool = False) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE progress" if analyze else "VACUUM progress"))


def _reads(
    plain: DatabaseConnection, parted: DatabaseConnection, runs: int, calls: int
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    ids = [f"rs_{k:06d}" for k in range(runs)]
    asked = rng.sample(ids, min(1000, runs))
    with plain.connect(read_only=True) as connection:
        per_run = int(connection.execute(text("SELECT max(latest_seq) FROM runs")).scalar_one())
    picks = [(rng.choice(ids), rng.randrange(max(1, per_run - 100))) for _ in range(calls)]

    def pages(db: DatabaseConnection) -> Any:
        pending = iter(picks)
        return lambda: progress_since(db, *next(pending), limit=100)

    rows = []
    for label, call in (
        ("latest_progress (1,000 runs)", lambda db: lambda: latest_progress(db, asked)),
        ("progress_since (page of 100)", pages),
    ):
        samples = interleaved_latencies(
            {"plain": call(plain), "partitioned": call(parted)},
            {"plain": calls, "partitioned": calls},
        )
        plain_ms = median_p95_ms(samples["plain"])
        parted_ms = median_p95_ms(samples["partitioned"])
        rows.append(
            {
                "measure": label,
                "plain_median_ms": plain_ms[0],
                "plain_p95_ms": plain_ms[1],
                "partitioned_median_ms": parted_ms[0],
                "partitioned_p95_ms": parted_ms[1],
                "ratio": parted_ms[0] / plain_ms[0],
                "target": "<= 1.20",
            }
        )
        record_ratio(
            f"partitions/{label.split(' (')[0]} plain vs partitioned", plain_ms[0] / parted_ms[0]
        )
    return rows


def _ingest(
    plain: DatabaseConnection, parted: DatabaseConnection, runs: int
) -> list[dict[str, Any]]:
    """Events/s from one connection: single ``record_progress`` calls (one transaction each,
    what a GPU reporting on its own does), the same from 8 threads (each its own connection from
    the pool), and batches of 100 events over 10 runs."""
    ids = [f"rs_{k:06d}" for k in range(runs)]

    def singles(db: DatabaseConnection) -> Callable[[], int]:
        def work() -> int:
            for k in range(200):
                record_progress(db, ids[k % len(ids)], "inference", 50.0, "step")
            return 200

        return work

    def batches(db: DatabaseConnection) -> Callable[[], int]:
        events = [
            {"run_id": ids[k % 10], "stage": "inference", "percentage": 50.0, "message": "step"}
            for k in range(100)
        ]

        def work() -> int:
            for _ in range(20):
                record_progress_batch(db, events)
            return 2000

        return work

    def parallel(db: DatabaseConnection) -> Callable[[], int]:
        def one(worker: int) -> None:
            for k in range(25):
                record_progress(db, ids[(worker * 25 + k) % len(ids)], "inference", 50.0, "x")

        def work() -> int:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(8)))
            return 200

        return work

    rows = []
    for label, make in (
        ("record_progress, 1 event", singles),
        ("record_progress, 8 threads", parallel),
        ("batch of 100", batches),
    ):
        rates = best_of({"plain": make(plain), "partitioned": make(parted)}, rounds=3)
        rows.append(
            {
                "measure": f"ingest: {label} (events/s)",
                "plain": rates["plain"],
                "partitioned": rates["partitioned"],
                "ratio": rates["partitioned"] / rates["plain"],
            }
        )
        record_ratio(
            f"partitions/{label} partitioned vs plain", rates["partitioned"] / rates["plain"]
        )
    return rows


def _retention(db: DatabaseConnection, age: timedelta) -> dict[str, Any]:
    before = _size(db)
    start = time.perf_counter()
    result = prune(db, progress_older_than=age)
    seconds = time.perf_counter() - start
    after = _size(db)
    _vacuum(db)
    return {
        "events_deleted": result.expired_progress,
        "partitions_dropped": len(result.dropped_partitions),
        "seconds": seconds,
        "events_per_s": result.expired_progress / seconds,
        "size_before_mb": before / 2**20,
        "size_after_mb": after / 2**20,
        "size_after_vacuum_mb": _size(db) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    full = os.environ.get("COSMOS_BENCH_FULL", "").strip() in {"1", "true", "yes"}
    parser.add_argument("--events", type=int, default=FULL_EVENTS if full else REDUCED_EVENTS)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50,000 events, 100 calls")
    args = parser.parse_args()
    if args.quick:
        args.events, args.calls = 50_000, 100
    reason = server_reason("postgresql")
    if reason is not None:
        print(f"skipped: {reason}")
        return
    month = floor_to(_now(), "month")
    start = floor_to(month - timedelta(days=MONTHS * 31 - 15), "month")
    with server_database("postgresql") as plain_url, server_database("postgresql") as parted_url:
        plain, parted = DatabaseConnection(plain_url), DatabaseConnection(parted_url)
        try:
            for db in (plain, parted):
                upgrade(db, "0005")
                _load(db, args.runs, args.events, start, month)
            clock = time.perf_counter()
            upgrade(parted)
            conversion = time.perf_counter() - clock
            for db in (plain, parted):
                _vacuum(db, analyze=True)
            with parted.connect(read_only=True) as connection:
                partitions = list_partitions(connection)
            holding = len([p for p in partitions if not p.is_default and p.lower is not None])
            print(
                f"{args.events:,} old events + 1% recent, {args.runs:,} runs; 0006 converted "
                f"them in {conversion:.1f} s into {len(partitions)} partitions "
                f"({holding} with a lower bound)"
            )
            rows = _reads(plain, parted, args.runs, args.calls)
            report("partitions_reads", rows, list(rows[0]))
            ingest = _ingest(plain, parted, args.runs)
            report("partitions_ingest", ingest, list(ingest[0]))
            age = _now() - month
            dropped = {"method": "partition drop", **_retention(parted, age)}
            deleted = {"method": "DELETE (batches of 500)", **_retention(plain, age)}
            retention = [dropped, deleted]
            for row in retention:
                row["speedup_vs_delete"] = deleted["seconds"] / row["seconds"]
                row["events"] = args.events
                row["conversion_0006_s"] = conversion
            report("partitions_retention", retention, list(dropped))
        finally:
            plain.close()
            parted.close()


if __name__ == "__main__":
    main()
