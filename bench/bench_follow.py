"""Benchmark: latency from a progress write's commit to its delivery by ``follow_progress``.

A writer thread records single events at irregular intervals (10 to 30 ms apart, as workers do);
a follower thread in the same process receives them. Latency is the time from the moment
``record_progress`` returned (its transaction committed) to the moment the follower yielded the
event. Targets: median under 20 ms on PostgreSQL (LISTEN/NOTIFY), under 100 ms on SQLite
(``PRAGMA data_version``); p95 reported too. MariaDB (summary polling) with ``--backends``.
Recorded for ``make bench-check``: the target over the median (higher is better), counted up to
``HEADROOM_CAP``: below a quarter of the target, what is left is scheduler noise on a shared
machine (a 1 ms median on PostgreSQL moves by half between runs), not a regression.

    .venv/bin/python bench/bench_follow.py [--events 200] [--quick] [--backends ...]
"""

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import median_p95_ms, record_ratio, report  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    create_prompt,
    create_run,
    follow_progress,
    record_progress,
)
from tests.backends import server_database, server_reason  # noqa: E402

TARGET_MS = {"postgresql": 20.0, "sqlite-file": 100.0}
HEADROOM_CAP = 4.0


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite-file":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{directory}/follow.db"
    else:
        with server_database(backend) as url:
            yield url.render_as_string(hide_password=False)


def measure(backend: str, events: int) -> dict[str, Any]:
    with database(backend) as url, DatabaseConnection(url) as db:
        db.create_tables()
        prompt = create_prompt(
            db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
        )
        run_id = create_run(db, prompt.id).id
        committed: dict[int, float] = {}
        received: dict[int, float] = {}
        ready = threading.Event()

        def follow() -> None:
            stream = follow_progress(db, [run_id], after={}, idle_timeout=30)
            ready.set()
            for event in stream:
                received[event.seq] = time.perf_counter()
                if len(received) == events:
                    stream.close()
                    return

        follower = threading.Thread(target=follow)
        follower.start()
        ready.wait()
        time.sleep(0.5)  # let the follower open its connection and start waiting
        rng = random.Random(7)
        for index in range(events):
            event = record_progress(db, run_id, "inference", index % 101)
            committed[event.seq] = time.perf_counter()
            time.sleep(rng.uniform(0.010, 0.030))
        follower.join(60)
    latencies = [max(0.0, received[seq] - committed[seq]) for seq in committed if seq in received]
    median, p95 = median_p95_ms(latencies)
    target = TARGET_MS.get(backend)
    verdict = "-" if target is None else ("met" if median < target else "MISSED")
    if target is not None:
        headroom = min(HEADROOM_CAP, target / median) if median > 0 else HEADROOM_CAP
        record_ratio(f"follow/{backend}/median latency vs target (capped at 4)", headroom)
    return {
        "backend": backend,
        "events": events,
        "delivered": len(received),
        "median_ms": median,
        "p95_ms": p95,
        "target": f"{verdict} (< {target:.0f} ms)" if target else "no target (polling)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--backends", default="sqlite-file,postgresql")
    parser.add_argument("--quick", action="store_true", help="60 events")
    args = parser.parse_args()
    if args.quick:
        args.events = 60
    rows = []
    for backend in args.backends.split(","):
        if backend != "sqlite-file" and (reason := server_reason(backend)):
            print(f"{backend} skipped: {reason}")
            continue
        rows.append(measure(backend, args.events))
    report("follow", rows, ["backend", "events", "delivered", "median_ms", "p95_ms", "target"])


if __name__ == "__main__":
    main()
