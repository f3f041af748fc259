"""The peers bench_claims.py measures claims against: pgbench running the same SQL, and PgQueuer.

Not a benchmark of its own (``make bench`` runs bench_*.py): helpers that each drain a queue of
``runs`` jobs on PostgreSQL with 4 clients and return (seconds, what each client took).
"""

import asyncio
import glob
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "claims_pgbench.sql"
CLIENTS = 4
TIMEOUT = 600
# pgbench clients run a fixed number of transactions; a claim that finds every remaining run
# locked by the other clients gets no row and aborts its client, so the queue holds a few more
# runs than are claimed (left pending, checked).
PGBENCH_SLACK = 64


def pgbench_path() -> str | None:
    """pgbench from PATH or the PostgreSQL installation, or None."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


def run_pgbench(pgbench: str, url: Any, transactions: int) -> float:
    """Run the claim + complete script, ``transactions`` in all over 4 clients; return tps."""
    command = [
        pgbench,
        "-n",
        "-M",
        "prepared",
        "-c",
        str(CLIENTS),
        "-j",
        "2",
        "-f",
        str(SCRIPT),
        "-t",
        str(transactions // CLIENTS),
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        url.database,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    processed = re.search(r"actually processed: (\d+)/(\d+)", done.stdout)
    if done.returncode != 0 or processed is None or processed[1] != processed[2]:
        raise SystemExit(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if match is None:
        raise SystemExit(f"pgbench printed no tps:\n{done.stdout}")
    return float(match.group(1))


# -- PgQueuer ----------------------------------------------------------------------------------


def pgqueuer_reason() -> str | None:
    """None if PgQueuer (with asyncpg) can be imported, else why not."""
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
    except ImportError as exc:
        return f"not installed ({exc.name}): make bench installs the bench extra"
    return None


def pgqueuer_version() -> str:
    from importlib.metadata import version

    return version("pgqueuer")


async def _enqueue(dsn: str, runs: int) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        await queries.install()
        for start in range(0, runs, 1000):
            count = min(1000, runs - start)
            payloads: list[bytes | None] = [
                f"rs_{index:06d}".encode() for index in range(start, start + count)
            ]
            await queries.enqueue(["claim"] * count, payloads, [0] * count)
        # Statistics, as bench_claims.analyze collects them for our queue.
        await connection.execute("ANALYZE pgqueuer")
    finally:
        await connection.close()


def pgqueuer_fill(dsn: str, runs: int) -> list[str]:
    """Install PgQueuer in the database at ``dsn`` and enqueue ``runs`` jobs; return payloads."""
    asyncio.run(_enqueue(dsn, runs))
    return [f"rs_{index:06d}" for index in range(runs)]


async def _consume(dsn: str, batch: int, barrier: Any) -> list[str]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(dsn)
    taken: list[str] = []
    manager = QueueManager(Queries(AsyncpgDriver(connection)))

    @manager.entrypoint("claim")
    async def claim(job: Job) -> None:
        assert job.payload is not None
        taken.append(job.payload.decode())

    await asyncio.to_thread(barrier.wait, TIMEOUT)
    # Drain mode: stop once the queue is empty; completion is PgQueuer's own bookkeeping.
    await manager.run(batch_size=batch, mode=QueueExecutionMode.drain)
    await connection.close()
    return taken


def pgqueuer_consumer(dsn: str, name: str, batch: int, barrier: Any, results: Any) -> None:
    """One consumer process: wait for the others, drain the queue, report what it took."""
    logging.disable(logging.WARNING)
    try:
        results.put((name, asyncio.run(_consume(dsn, batch, barrier)), None))
    except Exception as exc:  # reported: an error must fail the benchmark, not hang it
        results.put((name, [], f"{type(exc).__name__}: {exc}"))


def pgqueuer_leftovers(dsn: str) -> int:
    """How many jobs are still queued (0 after a drain)."""

    async def count() -> int:
        import asyncpg

        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM pgqueuer"))
        finally:
            await connection.close()

    return asyncio.run(count())
