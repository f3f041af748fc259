"""claim_next_runs: batches, order, model types, what is written; dead pooled connections."""

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, literal, select, text
from sqlalchemy import exc as sa_exc

from cosmos_models import (
    CommitUnknownError,
    DatabaseConnection,
    DatabaseError,
    RunStatus,
    claim_next_run,
    claim_next_runs,
    complete_and_claim_runs,
    create_run,
    get_run,
    transition,
)
from cosmos_models.db import recovery
from cosmos_models.db.recovery import Unit, closed_by_server
from tests.backends import SERVER_BACKENDS, admin_url
from tests.factories import at, new_prompt, pending_runs


def test_a_batch_takes_the_oldest_pending_runs_in_order(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    # Created out of order, with a tie on created_at broken by id.
    for run_id, seconds in [("rs_e", 5), ("rs_d", 1), ("rs_b", 3), ("rs_c", 1), ("rs_a", 9)]:
        create_run(db, {"id": run_id, "prompt_id": prompt_id}, now=at(seconds))
    first = claim_next_runs(db, "gpu-1", limit=3, now=at(20))
    assert [run.id for run in first] == ["rs_c", "rs_d", "rs_b"]
    for run in first:
        assert (run.status, run.worker_id) == (RunStatus.UPLOADING, "gpu-1")
        assert run.started_at == run.heartbeat_at == run.updated_at == at(20)
        assert run.completed_at is None
        assert get_run(db, run.id) == run  # what came back is what is stored
    rest = claim_next_runs(db, "gpu-2", limit=3, to="running", now=at(21))
    assert [(run.id, run.status, run.worker_id) for run in rest] == [
        ("rs_e", RunStatus.RUNNING, "gpu-2"),
        ("rs_a", RunStatus.RUNNING, "gpu-2"),
    ]
    assert claim_next_runs(db, "gpu-3", limit=1000) == []
    assert claim_next_run(db, "gpu-3") is None


def test_a_batch_takes_only_runs_of_the_model_types_asked_for(db: DatabaseConnection) -> None:
    transfer = pending_runs(db, 3, "transfer")
    reason = pending_runs(db, 2, "reason")
    got = claim_next_runs(db, "w", ["reason", "predict"], limit=5, now=at(30))
    assert [run.id for run in got] == reason
    assert claim_next_runs(db, "w", ("reason",), limit=5) == []
    assert [run.id for run in claim_next_runs(db, "w", {"transfer"}, limit=2)] == transfer[:2]
    # Claimed runs stay claimed: nothing else changed them.
    assert get_run(db, transfer[2]).status == RunStatus.PENDING


def test_claimed_runs_keep_their_other_fields(db: DatabaseConnection) -> None:
    prompt_id = new_prompt(db)
    created = create_run(
        db,
        {
            "prompt_id": prompt_id,
            "execution_config": {"gpu": "a100", "nested": {"k": [1, 2]}},
            "run_metadata": {"who": "ünïcode"},
        },
        now=at(1),
    )
    [claimed] = claim_next_runs(db, "w", limit=10, now=at(2))
    expected = created.model_copy(
        update={
            "status": RunStatus.UPLOADING,
            "worker_id": "w",
            "started_at": at(2),
            "heartbeat_at": at(2),
            "updated_at": at(2),
        }
    )
    assert claimed == expected


def test_transition_returns_the_stored_row_and_keeps_its_errors(db: DatabaseConnection) -> None:
    run_id = pending_runs(db, 1)[0]
    claimed = claim_next_run(db, "w", now=at(5))
    assert claimed is not None
    done = transition(db, run_id, "running", expected_from="uploading", now=at(6))
    assert done == get_run(db, run_id)
    failed = transition(db, run_id, "failed", error_message="out of memory", now=at(7))
    assert (failed.status, failed.error_message, failed.completed_at) == (
        RunStatus.FAILED,
        "out of memory",
        at(7),
    )
    assert failed == get_run(db, run_id)


# -- dead pooled connections -------------------------------------------------------------------


class _Socket:
    """A stand-in DB-API connection exposing a socket the way PyMySQL does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock


def test_a_socket_with_something_to_read_while_idle_is_closed_by_the_server() -> None:
    ours, server = socket.socketpair()
    with ours, server:
        assert not closed_by_server(_Socket(ours))
        server.sendall(b"E")  # a farewell message (FATAL: terminating connection)
        assert closed_by_server(_Socket(ours))
    other, peer = socket.socketpair()
    with other:
        peer.close()  # end-of-file
        assert closed_by_server(_Socket(other))
        closed = _Socket(other)
    assert closed_by_server(closed)  # fileno() refuses once the socket is closed
    assert not closed_by_server(object())  # no socket (SQLite): nothing to check
    assert closed_by_server(_Closed())  # psycopg refuses fileno() once it knows


class _Closed:
    def fileno(self) -> int:
        raise OSError("the connection is closed")


def _invalidated(message: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, Exception(message), connection_invalidated=True)


def test_a_unit_is_retried_once_only_before_anything_can_have_committed(
    db: DatabaseConnection,
) -> None:
    autocommit = db.engine.dialect.name == "postgresql"
    calls: list[str] = []

    def dies_once_after(kind: str) -> Any:
        def work(unit: Unit) -> int:
            calls.append(kind)
            (unit.read if kind == "read" else unit.write)(select(literal(1)), {})
            if len(calls) == 1:
                raise _invalidated("server closed the connection unexpectedly")
            return len(calls)

        return work

    assert db.run_unit(dies_once_after("read")) == 2  # a read: nothing written, retried
    calls.clear()
    if autocommit:  # the write was sent, so committed as it ran: its outcome is unknown
        with pytest.raises(CommitUnknownError, match="server closed the connection"):
            db.run_unit(dies_once_after("write"))
        assert calls == ["write"]
    else:  # inside a transaction that never committed: retried
        assert db.run_unit(dies_once_after("write")) == 2

    def always_dies(unit: Unit) -> int:
        calls.append("again")
        raise _invalidated("connection lost")

    calls.clear()
    with pytest.raises(DatabaseError, match="connection lost"):
        db.run_unit(always_dies)
    assert calls == ["again", "again"]  # once, not more


def test_a_unit_is_not_retried_when_its_commit_fails(
    db: DatabaseConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine import Connection

    calls: list[int] = []

    def commit_dies(self: Connection) -> None:
        raise _invalidated("lost during COMMIT")

    monkeypatch.setattr(Connection, "commit", commit_dies)
    with pytest.raises(CommitUnknownError, match="lost during COMMIT"):
        db.run_unit(lambda unit: calls.append(1))
    assert calls == [1]  # COMMIT was sent: it may have committed, so no second try
    monkeypatch.undo()
    db.close()
    with pytest.raises(RuntimeError, match="closed"):
        db.run_unit(lambda unit: None)


@pytest.fixture
def admin(backend: str) -> Iterator[Any]:
    engine = create_engine(admin_url(backend), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _server_id(db: DatabaseConnection) -> int:
    """The server's id of a connection from the pool."""
    postgresql = db.engine.dialect.name == "postgresql"
    with db.engine.connect() as connection:
        query = "SELECT pg_backend_pid()" if postgresql else "SELECT CONNECTION_ID()"
        return int(connection.execute(text(query)).scalar_one())


def _kill_pool(admin: Any, backend: str, db: DatabaseConnection) -> set[int]:
    """Kill every server connection to ``db``'s database from another session; return their ids.

    Returns once the server has dropped them all.
    """
    if backend == "postgresql":
        sessions = "SELECT pid FROM pg_stat_activity WHERE datname = :name"
    else:
        sessions = "SELECT id FROM information_schema.processlist WHERE db = :name"
    ids = set(admin.execute(text(sessions), {"name": db.url.database}).scalars())
    assert ids, "the pool holds no connection"
    for server_id in ids:
        if backend == "postgresql":
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": server_id})
        else:
            admin.execute(text(f"KILL {int(server_id)}"))
    deadline = time.monotonic() + 10
    while set(admin.execute(text(sessions), {"name": db.url.database}).scalars()) & ids:
        assert time.monotonic() < deadline, "the server did not drop the connections"
        time.sleep(0.01)
    return ids


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_pooled_connection_killed_by_the_server_is_replaced_without_a_failure(
    backend: str, db: DatabaseConnection, admin: Any
) -> None:
    run_ids = pending_runs(db, 3)
    killed = _kill_pool(admin, backend, db)
    # The next calls check the dead connection out of the pool: found closed, replaced.
    [claimed] = claim_next_runs(db, "w", limit=1, now=at(10))
    assert claimed.id == run_ids[0]
    assert get_run(db, run_ids[1]).status == RunStatus.PENDING
    assert _server_id(db) not in killed


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_dead_connection_used_by_a_claim_costs_at_most_one_failed_call(
    backend: str, db: DatabaseConnection, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the server dropped the connection after the checkout check (a network cut).
    monkeypatch.setattr(recovery, "closed_by_server", lambda dbapi_connection: False)
    run_ids = pending_runs(db, 3)
    _kill_pool(admin, backend, db)
    if backend == "postgresql":
        # An autocommit claim sent on a dead connection: its outcome is unknown, so it is not
        # retried; the pool was invalidated, so the next call gets a fresh connection.
        with pytest.raises(DatabaseError):
            claim_next_runs(db, "w", limit=1, now=at(10))
        assert get_run(db, run_ids[0]).status == RunStatus.PENDING  # it never ran
    [claimed] = claim_next_runs(db, "w", limit=1, now=at(10))
    assert claimed.id == run_ids[0]
    # transition reads the status first: a dead connection fails that read, which is retried.
    _kill_pool(admin, backend, db)
    moved = transition(db, run_ids[0], "running", now=at(11))
    assert moved.status == RunStatus.RUNNING


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_dead_connection_used_by_a_hand_off_changes_nothing_or_is_retried(
    backend: str, db: DatabaseConnection, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the server dropped the connection after the checkout check (a network cut).
    monkeypatch.setattr(recovery, "closed_by_server", lambda dbapi_connection: False)
    run_ids = pending_runs(db, 4)
    held, queued = run_ids[:2], run_ids[2:]
    assert [run.id for run in claim_next_runs(db, "w", limit=2, to="running")] == held
    _kill_pool(admin, backend, db)
    if backend == "postgresql":
        # The one statement was sent on a dead connection: its outcome is unknown, so it is
        # not retried (a retry could claim a second batch); here it never ran.
        with pytest.raises(CommitUnknownError):
            complete_and_claim_runs(db, "w", held, limit=2, now=at(10))
        assert {get_run(db, run_id).status for run_id in held} == {RunStatus.RUNNING}
        assert {get_run(db, run_id).status for run_id in queued} == {RunStatus.PENDING}
    # MariaDB: the transaction's first read fails and is retried; PostgreSQL: a fresh pool.
    claimed = complete_and_claim_runs(db, "w", held, limit=2, now=at(10))
    assert [run.id for run in claimed] == queued
    assert {get_run(db, run_id).status for run_id in held} == {RunStatus.COMPLETED}
