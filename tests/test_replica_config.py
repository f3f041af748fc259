"""Replica and failover configuration without a cluster: argument and URL checks, the
environment variable, secret masking, multi-host URLs, and a commit whose outcome is unknown."""

from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy import exc as sa_exc

from cosmos_models import (
    CommitUnknownError,
    DatabaseConnection,
    DatabaseError,
    ReadRoutingStats,
    create_prompt,
    get_run,
)
from cosmos_models.db.locations import parse_location, redact_url
from cosmos_models.db.migrate import current_revision, upgrade
from cosmos_models.db.replicas import ReplicaRouter
from cosmos_models.db.tables import PROMPTS
from cosmos_models.db.translate import commit_or_unknown
from tests.backends import SERVER_BACKENDS, admin_url
from tests.conftest import _empty_tables, connect, require_backend
from tests.pg_cluster import free_port

PG = "postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/cosmos"
PROMPT = {"model_type": "transfer", "prompt_text": "city", "inputs": {}, "parameters": {}}


@pytest.mark.parametrize(
    ("primary", "replicas", "message"),
    [
        ("sqlite:///x.db", [PG], "read replicas need PostgreSQL; the primary is sqlite"),
        (PG, ["mysql://root:s3cret@h/db"], "the replicas[0] is mysql"),
        (PG, PG, "replicas: must be a list of URLs, got str"),
        (PG, [PG, "postgresql://u:s3cret@h/../x"], "replicas[1]: database name must not"),
        (PG, ["ftp://u:s3cret@h/x"], "replicas[0]: unsupported database URL scheme 'ftp'"),
    ],
)
def test_bad_replicas_are_refused_naming_the_entry(
    primary: str, replicas: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="replicas") as caught:
        DatabaseConnection(primary, replicas=replicas)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("value", [-1, None, float("nan"), float("inf"), True, "1"])
@pytest.mark.parametrize("name", ["replica_wait", "replica_retry"])
def test_replica_timings_must_be_seconds(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        DatabaseConnection(PG, replicas=[PG], **{name: value})  # type: ignore[arg-type]


def test_replicas_come_from_the_environment_with_the_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = PG.replace("5432", "5433")
    monkeypatch.setenv("COSMOS_DATABASE_URL", PG)
    monkeypatch.setenv("COSMOS_DATABASE_REPLICA_URLS", f" {PG} , {other}")
    with DatabaseConnection() as db:
        assert sorted(db.read_routing_stats().replicas) == sorted(
            redact_url(parse_location(url)) for url in (PG, other)
        )
        assert "s3cret" not in repr(db.read_routing_stats())
    # An explicit location is its own configuration: the variable does not apply.
    with DatabaseConnection(PG) as db:
        assert db.read_routing_stats() == ReadRoutingStats()
    monkeypatch.setenv("COSMOS_DATABASE_REPLICA_URLS", "  ")
    with DatabaseConnection() as db:
        assert db.read_routing_stats().replicas == {}


def test_an_invalid_replica_variable_names_itself_and_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSMOS_DATABASE_URL", PG)
    monkeypatch.setenv("COSMOS_DATABASE_REPLICA_URLS", f"{PG},postgresql://u:s3cret@h/%2e%2e/x")
    with pytest.raises(ValueError, match="COSMOS_DATABASE_REPLICA_URLS is invalid: entry 2") as e:
        DatabaseConnection()
    assert "s3cret" not in str(e.value)


def test_a_multi_host_url_is_accepted_and_masked() -> None:
    url = (
        "postgresql://u:s3cret@/db?host=10.0.0.1:5432&host=10.0.0.2:5432"
        "&target_session_attrs=read-write&sslpassword=k3y"
    )
    with DatabaseConnection(url) as db:
        shown = repr(db)
        assert "s3cret" not in shown
        assert "k3y" not in shown
        assert "10.0.0.1%3A5432" in shown
        assert "10.0.0.2%3A5432" in shown
        args = db.engine.dialect.create_connect_args(db.engine.url)[1]
        assert args["host"] == "10.0.0.1,10.0.0.2"
        assert args["target_session_attrs"] == "read-write"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:s3cret@/db?host=h1:1&host=h2:2", "supported on PostgreSQL only"),
        ("postgresql://u:s3cret@h0/db?host=h1:1&host=h2:2", "either in the URL's host part"),
        ("postgresql://u:s3cret@/db?host=h1,h2&target_session_attrs=rw", "must be one of"),
        ("postgresql://u:s3cret@/db?target_session_attrs=any&target_session_attrs=any", "one of"),
    ],
)
def test_bad_multi_host_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        DatabaseConnection(url)
    assert "s3cret" not in str(caught.value)


def test_a_multi_host_url_connects_to_the_host_that_takes_writes() -> None:
    require_backend("postgresql")
    live = admin_url("postgresql")
    url = (
        f"postgresql+psycopg://{live.username}@/{live.database}?host=127.0.0.1:{free_port()}"
        f"&host={live.host}:{live.port}&target_session_attrs=read-write"
    )
    with DatabaseConnection(url) as db, db.connect() as connection:
        assert connection.execute(text("SELECT NOT pg_is_in_recovery()")).scalar_one()


def test_a_replica_error_is_one_line_without_the_replica_password(tmp_path: Path) -> None:
    # The primary itself as a "replica" with a password (trust authentication ignores it): a
    # server not in recovery is always caught up, so reads go to it.
    plain = connect("postgresql", tmp_path)
    try:
        plain.create_tables()
        replica = plain.url.set(password="r3plica-pw")
        with DatabaseConnection(plain.url, replicas=[replica]) as db:
            prompt = create_prompt(db, PROMPT)
            with pytest.raises(LookupError):
                get_run(db, prompt.id)
            with pytest.raises(DatabaseError) as caught, db.connect(read_only=True) as c:
                c.execute(text("SELECT * FROM no_such_table"))
            assert "r3plica-pw" not in str(caught.value)
            assert "\n" not in str(caught.value)
            assert db.read_routing_stats().replicas == {redact_url(replica): 2}
    finally:
        _empty_tables(plain)
        plain.close()


def _kill(backend: str, session_id: int) -> None:
    engine = create_engine(admin_url(backend), isolation_level="AUTOCOMMIT")
    with engine.connect() as admin:
        if backend == "postgresql":
            admin.execute(text("SELECT pg_terminate_backend(:id)"), {"id": session_id})
        else:
            admin.execute(text(f"KILL {int(session_id)}"))
    engine.dispose()


def _session_id(connection: object, backend: str) -> int:
    query = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    return int(connection.execute(text(query)).scalar_one())  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_connection_lost_during_commit_is_commit_unknown(backend: str, tmp_path: Path) -> None:
    with connect(backend, tmp_path) as db:
        db.create_tables()
        with pytest.raises(CommitUnknownError, match="may or may not have been applied"):
            with db.get_session() as session:
                session.execute(text("SELECT 1"))
                _kill(backend, _session_id(session, backend))
        with pytest.raises(CommitUnknownError, match="check before retrying"):
            with db.begin() as connection:
                _kill(backend, _session_id(connection, backend))
        # Lost before COMMIT was sent: certainly not applied, a plain DatabaseError.
        with pytest.raises(DatabaseError) as caught, db.get_session() as session:
            _kill(backend, _session_id(session, backend))
            session.execute(text("SELECT 1"))
        assert not isinstance(caught.value, CommitUnknownError)
        with db.get_session() as session:  # the pool recovered
            assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_commit_refused_by_the_server_is_not_commit_unknown() -> None:
    refused = sa_exc.OperationalError("COMMIT", {}, Exception("serialization failure"))

    class Refusing:
        def commit(self) -> None:
            raise refused

    with pytest.raises(sa_exc.OperationalError) as caught:
        commit_or_unknown(Refusing(), DatabaseError)
    assert caught.value is refused


def test_a_failed_core_transaction_is_rolled_back(db: DatabaseConnection) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.begin() as connection:
        connection.execute(PROMPTS.insert().values(**PROMPT, id="ps_lost"))
        raise RuntimeError("boom")
    with db.connect(read_only=True) as connection:
        assert connection.execute(select(PROMPTS.c.id)).all() == []


def _router(primary: Engine, replica: Engine) -> ReplicaRouter:
    return ReplicaRouter(primary, [parse_location(PG)], lambda _: replica, wait=0.0, retry=0.0)


def test_a_write_position_not_taken_sends_reads_to_the_primary_until_it_is() -> None:
    require_backend("postgresql")
    live = create_engine(admin_url("postgresql"))
    primary = create_engine(admin_url("postgresql"))
    router = _router(primary, live)  # the live server as its own "replica": always caught up
    try:
        with primary.connect() as connection:
            connection.execute(text("SELECT 1"))
            connection.commit()
            # The primary goes away right after the commit, before the position is taken.
            connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    except sa_exc.DBAPIError:
        pass
    router.primary = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    try:
        with router.read_connection() as connection:
            assert connection is None  # unknown, and still unknowable: the primary reads
        router.primary = primary  # back
        # Another thread's commit goes unmeasured while the position is being taken: that one
        # is not covered by it, so this read still goes to the primary.
        bump = lambda *_: setattr(router, "_unknown", router._unknown + 1)  # noqa: E731
        event.listen(primary, "engine_connect", bump)
        with router.read_connection() as connection:
            assert connection is None
        event.remove(primary, "engine_connect", bump)
        with router.read_connection() as connection:
            assert connection is not None  # known again: the replica reads
        replica_name = redact_url(router.replicas[0].url)
        assert router.stats() == ReadRoutingStats(primary=2, replicas={replica_name: 1})
    finally:
        router.dispose()
        primary.dispose()


def test_a_replica_whose_position_cannot_be_read_is_skipped_as_down(tmp_path: Path) -> None:
    not_postgres = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    router = _router(not_postgres, not_postgres)
    with router.read_connection() as connection:
        assert connection is None
    assert router.stats().unavailable == 1
    router.dispose()


def test_schema_tools_ignore_the_replica_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A replica URL that would fail if used: migrations and revision reads go to the primary.
    monkeypatch.setenv("COSMOS_DATABASE_URL", str(tmp_path / "primary.db"))
    monkeypatch.setenv("COSMOS_DATABASE_REPLICA_URLS", PG)
    with pytest.raises(ValueError, match="the primary is sqlite"):
        DatabaseConnection()
    upgrade(None, "head")
    assert current_revision() is not None
