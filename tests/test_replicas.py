"""Read replicas on a real streaming replica: routing, read-your-writes under injected lag,
a replica that goes down and comes back. One private cluster for the module (tests/pg_cluster)."""

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text

from cosmos_models import (
    DatabaseConnection,
    Progress,
    Prompt,
    Run,
    create_prompt,
    create_run,
    get_run,
    latest_progress,
    record_progress,
    transition,
)
from cosmos_models.db.tables import RUNS
from tests.pg_cluster import PRIMARY, REPLICA, PgCluster, free_port
from tests.replica_cluster import make_cluster

DATABASE = "cosmos_replicas"
PROMPT = {"model_type": "transfer", "prompt_text": "city", "inputs": {}, "parameters": {}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    made = make_cluster(DATABASE)
    try:
        yield made
    finally:
        made.destroy()


def routed(cluster: PgCluster, **options: float) -> DatabaseConnection:
    return DatabaseConnection(
        cluster.url(PRIMARY, DATABASE), replicas=[cluster.url(REPLICA, DATABASE)], **options
    )


@pytest.fixture
def db(cluster: PgCluster) -> Iterator[DatabaseConnection]:
    """A connection to the cluster's primary with its replica; leaves no rows behind."""
    connection = routed(cluster, replica_wait=1.0, replica_retry=0.2)
    try:
        yield connection
    finally:
        connection.close()
        _empty(cluster)


def _empty(cluster: PgCluster) -> None:
    """Delete every row the test made (on the primary; the replica follows)."""
    with DatabaseConnection(cluster.url(PRIMARY, DATABASE)) as primary, primary.begin() as c:
        for table in (Progress, Run, Prompt):
            c.execute(delete(table))  # type: ignore[arg-type]


def in_recovery(db: DatabaseConnection, *, read_only: bool) -> bool:
    with db.get_session(read_only=read_only) as session:
        return bool(session.execute(text("SELECT pg_is_in_recovery()")).scalar_one())


def test_reads_go_to_the_replica_and_writes_to_the_primary(
    cluster: PgCluster, db: DatabaseConnection
) -> None:
    run = create_run(db, create_prompt(db, PROMPT).id)
    assert get_run(db, run.id).id == run.id  # read-your-writes: the replica waited for it
    assert in_recovery(db, read_only=True)
    assert not in_recovery(db, read_only=False)
    with db.connect(read_only=True) as connection:
        assert connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one()
    with db.begin() as connection:
        assert not connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one()
    stats = db.read_routing_stats()
    (replica_name,) = stats.replicas
    assert replica_name == cluster.url(REPLICA, DATABASE)
    assert stats.replicas[replica_name] >= 3
    assert (stats.primary, stats.lagging, stats.unavailable) == (0, 0, 0)


def _write_then_read(db: DatabaseConnection, prompt_id: str, rounds: int) -> None:
    """Each round makes three writes (a run, its claim, an event), each read back at once."""
    for step in range(rounds):
        run = create_run(db, prompt_id)
        assert get_run(db, run.id).status == "pending", f"stale at round {step}"  # else not found
        transition(db, run.id, "uploading")
        assert get_run(db, run.id).status == "uploading", f"stale at round {step}"
        event = record_progress(db, run.id, "uploading", 50.0)
        assert latest_progress(db, [run.id])[run.id].seq == event.seq, f"stale at round {step}"


def test_no_stale_read_after_a_write_with_replication_lag(cluster: PgCluster) -> None:
    cluster.set_apply_delay(25)
    try:
        with routed(cluster, replica_wait=1.0) as db, routed(cluster, replica_wait=0.0) as hasty:
            prompt_id = create_prompt(db, PROMPT).id
            # The lag is real: the replica read on its own right after a write is stale.
            with DatabaseConnection(cluster.url(REPLICA, DATABASE)) as replica_only:
                stale = 0
                for _ in range(5):
                    with replica_only.connect() as warm:  # connected before the write
                        run = create_run(db, prompt_id)
                        found = warm.execute(select(RUNS.c.id).where(RUNS.c.id == run.id))
                        stale += found.first() is None
                assert stale >= 4
            # Reads that wait for the replica: served by it, never stale.
            _write_then_read(db, prompt_id, rounds=20)
            waited = db.read_routing_stats()
            assert sum(waited.replicas.values()) >= 60
            assert waited.lagging == 0
            # Reads that cannot wait: served by the primary, never stale.
            _write_then_read(hasty, prompt_id, rounds=20)
            fallen_back = hasty.read_routing_stats()
            assert fallen_back.lagging >= 1
            assert fallen_back.primary >= 50
    finally:
        cluster.set_apply_delay(0)
        _empty(cluster)


def _served_by_replica(db: DatabaseConnection, run_id: str, timeout: float) -> bool:
    """Read until a replica serves a read (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    before = sum(db.read_routing_stats().replicas.values())
    while time.monotonic() < deadline:
        assert get_run(db, run_id).id == run_id
        if sum(db.read_routing_stats().replicas.values()) > before:
            return True
        time.sleep(0.05)
    return False


def test_a_replica_down_is_skipped_and_rejoins_when_back(
    cluster: PgCluster, db: DatabaseConnection
) -> None:
    run = create_run(db, create_prompt(db, PROMPT).id)
    assert _served_by_replica(db, run.id, timeout=5)
    cluster.stop(REPLICA)
    try:
        for _ in range(5):  # every read succeeds, from the primary
            assert get_run(db, run.id).id == run.id
        stats = db.read_routing_stats()
        assert stats.unavailable >= 1
        assert stats.primary >= 5
    finally:
        cluster.start(REPLICA)
    assert _served_by_replica(db, run.id, timeout=10)


def test_a_replica_that_never_answers_leaves_reads_to_the_primary(cluster: PgCluster) -> None:
    # A port where nothing listens: every read falls back, the replica is retried after 0 s.
    dead = f"postgresql+psycopg://postgres:pw-never-shown@127.0.0.1:{free_port()}/{DATABASE}"
    with DatabaseConnection(cluster.url(PRIMARY, DATABASE), replicas=[dead], replica_retry=0) as db:
        create_prompt(db, PROMPT)
        assert in_recovery(db, read_only=True) is False
        with db.connect(read_only=True) as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        stats = db.read_routing_stats()
        assert stats.unavailable == 2
        assert stats.primary == 2
        assert "pw-never-shown" not in repr(stats)
        assert "pw-never-shown" not in repr(db)


def test_the_readme_example_runs(cluster: PgCluster, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Read replicas and failover\n", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    primary, replica = (f"127.0.0.1:{cluster.ports[node]}" for node in (PRIMARY, REPLICA))
    code = code.replace("app@/cosmos?host=db1:5432&host=db2:5432", f"postgres@/{DATABASE}?"
                        f"host={primary}&host={replica}")  # fmt: skip
    code = code.replace(
        '"postgresql://app@db2:5432/cosmos", "postgresql://app@db3:5432/cosmos"',
        f'"postgresql://postgres@{replica}/{DATABASE}"',
    )
    namespace: dict[str, object] = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        assert "lagging=0, unavailable=0" in capsys.readouterr().out
    finally:
        namespace["db"].close()  # type: ignore[attr-defined]
        _empty(cluster)


def test_the_async_side_reads_its_writes_from_the_replica_without_blocking_the_loop(
    cluster: PgCluster,
) -> None:
    """AsyncDatabase takes the same replica options; waiting for the replica to replay a write
    yields to the event loop (a ticker keeps ticking) and no read is stale."""
    from cosmos_models import aio
    from cosmos_models.aio import AsyncDatabase
    from cosmos_models.aio.database import sync_view

    async def scenario() -> tuple[int, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        async with AsyncDatabase(
            cluster.url(PRIMARY, DATABASE),
            replicas=[cluster.url(REPLICA, DATABASE)],
            replica_wait=2.0,
        ) as adb:
            ticking = asyncio.create_task(ticker())
            prompt_id = (await aio.create_prompt(adb, PROMPT)).id
            stale = 0
            start, ticks = time.monotonic(), 0
            for _ in range(10):
                run = await aio.create_run(adb, prompt_id)
                stale += (await aio.get_run(adb, run.id)).id != run.id
            elapsed_ms = (time.monotonic() - start) * 1000
            ticking.cancel()
            stats = sync_view(adb).read_routing_stats()
            return stale, sum(stats.replicas.values()), ticks / elapsed_ms

    cluster.set_apply_delay(50)
    try:
        stale, from_replica, ticks_per_ms = asyncio.run(scenario())
    finally:
        cluster.set_apply_delay(0)
        _empty(cluster)
    assert stale == 0
    assert from_replica >= 10  # every read waited for the replica, none fell back
    # Ten waits of ≥ 50 ms each fill most of the time, and the loop ran during them (a
    # blocking wait lets the 1 ms ticker run only between database calls: a few ticks).
    assert ticks_per_ms >= 0.4  # measured: 0.77 waiting cooperatively, 0.20 blocking
