"""Benchmark: cosmos_models.aio against the sync functions, one read path and one write path.

Per backend, one migrated database holds 200 runs of one prompt with 5 events each. Two paths:

* read: ``get_run_detail`` of each run in turn (a run, its prompt's summary, its latest event);
* write: ``record_progress`` of one event to each run in turn (one transaction each);

called one after another, sync (``cosmos_models``) and async (``await aio.…`` on one event loop),
in ``PAIRS`` pairs of adjacent blocks of ``BLOCK`` calls on the same runs (``common.paired_rates``:
which side goes first alternates). The ratio async/sync, the median over the pairs, is the number
the issue asks for (target ≥ 0.8); ``pairs q1-q3`` says how much the pairs disagreed. ``async x8``
runs all the calls from 8 concurrent tasks (what an async web service does), for scale.

The event loop is asyncio's own; when uvloop is installed (uvicorn[standard] runs apps on it) the
async side is measured a second time on uvloop, in the same rounds, and stored as ``… (uvloop)``.

    .venv/bin/python bench/bench_async.py [--quick] [--backends sqlite-file,postgresql,mariadb]
"""

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import best_of, paired_rates, record_ratio, report  # noqa: E402

from cosmos_models import (  # noqa: E402
    DatabaseConnection,
    aio,
    create_prompt,
    create_run,
    get_run_detail,
    record_progress,
    record_progress_batch,
)
from cosmos_models.db.migrate import upgrade  # noqa: E402
from tests.backends import server_database, server_reason  # noqa: E402

BACKENDS = ("sqlite-memory", "sqlite-file", "postgresql", "mariadb")
TASKS = 8
BLOCK = 25
"""Calls per timed block: tens of milliseconds, against noise bursts of a few."""
PAIRS = 60


def event_loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loops to measure on, by the suffix their ratios are stored under."""
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"": None}
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loops[" (uvloop)"] = uvloop.new_event_loop
    return loops


@contextlib.contextmanager
def location(backend: str) -> Iterator[str]:
    if backend in SERVERS:
        with server_database(backend) as url:
            yield url.render_as_string(hide_password=False)
    else:
        with tempfile.TemporaryDirectory() as directory:
            yield str(Path(directory) / "bench.db")


SERVERS = ("postgresql", "mariadb")


def seed(db: DatabaseConnection, runs: int) -> list[str]:
    prompt = create_prompt(
        db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
    )
    ids = [create_run(db, prompt.id).id for _ in range(runs)]
    record_progress_batch(
        db,
        [
            {"run_id": run_id, "stage": "s", "percentage": float(step)}
            for run_id in ids
            for step in range(5)
        ],
    )
    return ids


def block_of(ids: list[str]) -> Callable[[], list[str]]:
    """Each call: the next ``BLOCK`` ids, going round ``ids`` (one cursor per side, so the two
    blocks of a pair call the same runs)."""
    position = itertools.count()

    def next_block() -> list[str]:
        start = next(position) * BLOCK
        return [ids[(start + offset) % len(ids)] for offset in range(BLOCK)]

    return next_block


def sides_of(
    db: DatabaseConnection,
    ids: list[str],
    sync_call: Callable[[DatabaseConnection, str], Any],
    async_call: Callable[[aio.AsyncDatabase, str], Any],
    runner: asyncio.Runner,
    adb: aio.AsyncDatabase,
) -> tuple[Callable[[], int], Callable[[], int], Callable[[], int]]:
    """A sync block, an async block (one call after another) and the concurrent async workload
    (all of ``ids`` from ``TASKS`` tasks) of one path on one loop."""
    sync_ids, async_ids = block_of(ids), block_of(ids)

    def sync_block() -> int:
        for run_id in sync_ids():
            sync_call(db, run_id)
        return BLOCK

    async def calls(share: list[str]) -> None:
        for run_id in share:
            await async_call(adb, run_id)

    def async_block() -> int:
        runner.run(calls(async_ids()))
        return BLOCK

    async def all_tasks() -> None:
        await asyncio.gather(*(calls(ids[index::TASKS]) for index in range(TASKS)))

    def concurrent() -> int:
        runner.run(all_tasks())
        return len(ids)

    return sync_block, async_block, concurrent


def write(db: DatabaseConnection, run_id: str) -> Any:
    return record_progress(db, run_id, "bench", 50.0)


def async_write(adb: aio.AsyncDatabase, run_id: str) -> Any:
    return aio.record_progress(adb, run_id, "bench", 50.0)


PATHS: dict[str, tuple[Any, Any]] = {
    "read get_run_detail": (get_run_detail, aio.get_run_detail),
    "write record_progress": (write, async_write),
}


def bench_backend(backend: str, runs: int, pairs: int) -> list[dict[str, Any]]:
    rows = []
    with location(backend) as where:
        if backend == "sqlite-memory":
            db = DatabaseConnection(":memory:")
            db.create_tables()
            async_location: Any = db.engine.url  # the same private file
        else:
            upgrade(where, backup=False)
            db = DatabaseConnection(where)
            async_location = where
        # One AsyncDatabase per loop: a pooled async connection belongs to the loop it opened on.
        sides = {
            suffix: (asyncio.Runner(loop_factory=new), aio.AsyncDatabase(async_location))
            for suffix, new in event_loops().items()
        }
        try:
            ids = seed(db, runs)
            for path, (sync_call, async_call) in PATHS.items():
                for suffix, (runner, adb) in sides.items():
                    sync_block, async_block, concurrent = sides_of(
                        db, ids, sync_call, async_call, runner, adb
                    )
                    measured = paired_rates(sync_block, async_block, pairs)
                    record_ratio(f"async/{backend}/{path} async vs sync{suffix}", measured.median)
                    q1, q3 = measured.quartiles()
                    rows.append(
                        {
                            "backend": backend,
                            "path": path,
                            "loop": suffix.strip(" ()") or "asyncio",
                            "sync calls/s": statistics.median(measured.reference),
                            "async calls/s": statistics.median(measured.contender),
                            "async/sync": measured.median,
                            "pairs q1-q3": f"{q1:.2f}-{q3:.2f}",
                            f"async x{TASKS} calls/s": best_of({"x": concurrent}, 3)["x"],
                        }
                    )
        finally:
            for runner, adb in sides.values():
                runner.run(adb.close())
                runner.close()
            db.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 runs instead of 200")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    arguments = parser.parse_args()
    runs, pairs = (100, 20) if arguments.quick else (200, PAIRS)
    rows: list[dict[str, Any]] = []
    for backend in arguments.backends.split(","):
        if backend in SERVERS and (reason := server_reason(backend)) is not None:
            print(f"skipped {backend}: {reason}")
            continue
        rows.extend(bench_backend(backend, runs, pairs))
    columns = list(rows[0]) if rows else ["backend"]
    report("bench_async", rows, columns)


if __name__ == "__main__":
    main()
