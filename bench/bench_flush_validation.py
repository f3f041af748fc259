"""Benchmark: what the flush-time re-validation (``base._validate_before_flush``) costs on inserts.

ORM inserts of prompt + run + progress rows into SQLite in memory, with the ``before_flush``
check registered and removed, interleaved (the minimum of many rounds, CPU time, so that other
processes on the machine disturb it less); and the check alone on the same objects.

    .venv/bin/python bench/bench_flush_validation.py [--rows 200] [--rounds 15] [--quick]
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import record_ratio  # noqa: E402
from sqlalchemy import delete, event  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from cosmos_models import DatabaseConnection, Progress, Prompt, Run  # noqa: E402
from cosmos_models.models.base import ValidatedTable, _validate_before_flush  # noqa: E402
from tests.factories import make_progress, make_prompt, make_run  # noqa: E402


def build(rows: int) -> list[ValidatedTable]:
    objects: list[ValidatedTable] = []
    for _ in range(rows):
        prompt = make_prompt()
        run = make_run(prompt, outputs={"video": "/o/x.mp4", "metrics": {"fid": 1.5}})
        objects += [prompt, run, make_progress(run, 5.0)]
    return objects


def cpu_seconds(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="100 rows, 8 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 100, 8
    db = DatabaseConnection(":memory:")
    db.create_tables()

    def insert() -> None:
        objects = build(args.rows)
        with db.get_session() as session:
            session.add_all(objects)

    def empty() -> None:
        with db.engine.begin() as connection:
            for table in (Progress, Run, Prompt):
                connection.execute(delete(table))  # type: ignore[arg-type]

    def check() -> float:
        objects = build(args.rows)
        return cpu_seconds(
            lambda: [item._check_before_flush(item.__field_names__) for item in objects]
        )

    times: dict[str, list[float]] = {"with check": [], "without": [], "check alone": []}
    for _ in range(args.rounds):
        times["with check"].append(cpu_seconds(insert))
        empty()
        event.remove(Session, "before_flush", _validate_before_flush)
        try:
            times["without"].append(cpu_seconds(insert))
        finally:
            event.listen(Session, "before_flush", _validate_before_flush)
        empty()
        times["check alone"].append(check())
    rows = 3 * args.rows
    best = {label: min(values) / rows * 1e6 for label, values in times.items()}
    for label, micros in best.items():
        print(f"{label:>12}: {micros:7.1f} µs per row")
    print(f"insert with / without the check: {best['with check'] / best['without']:.2f}")
    print(f"check / insert without it:      {best['check alone'] / best['without']:.2f}")
    # Higher is better: the insert without the check over the insert with it (1.0: free).
    record_ratio(
        "flush_validation/insert without vs with the check", best["without"] / best["with check"]
    )


if __name__ == "__main__":
    main()
