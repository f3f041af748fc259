"""Ids, worker ids, model types and names compare exactly on every backend: no case folding,
no accent folding, no PAD SPACE.

Besides the ``db`` backends, every test runs on MariaDB databases whose default collation is
case- and accent-insensitive (``utf8mb4_general_ci``, ``utf8mb4_unicode_ci``), as a user's
database often is: the tables' own collation (migration 0004) must decide, not the database's.
"""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import URL

from cosmos_models import (
    DatabaseConnection,
    IntegrityViolation,
    Progress,
    Prompt,
    PromptCreate,
    PromptNotFoundError,
    Run,
    RunNotFoundError,
    WorkerMismatchError,
    claim_next_run,
    create_prompt,
    create_run,
    get_run,
    get_run_detail,
    heartbeat,
    latest_progress,
    list_prompts,
    list_runs,
    metadata,
    progress_since,
    record_progress,
    transition,
)
from cosmos_models.db.migrate import downgrade, schema_differences, upgrade
from tests.backends import ALL_BACKENDS, admin_url
from tests.conftest import connect, require_backend

FOLDING_COLLATIONS = ("utf8mb4_general_ci", "utf8mb4_unicode_ci")
BACKENDS = (*ALL_BACKENDS, *(f"mariadb-{collation}" for collation in FOLDING_COLLATIONS))

BASE = "rs_é"
# Each differs from BASE only in case, accent or trailing space: equal under the collations
# a MariaDB database defaults to (utf8mb4_bin pads spaces; *_ci also folds case and accents).
LOOKALIKES = ("RS_É", "rs_e", "rs_é ", "RS_E ")


@pytest.fixture(scope="module")
def folding_databases() -> Iterator[dict[str, URL]]:
    """One MariaDB database per folding default collation, made on first use, for the module."""
    made: dict[str, URL] = {}
    engine = None
    try:
        yield made
    finally:
        if made:
            engine = create_engine(admin_url("mariadb"), isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                for url in made.values():
                    connection.execute(text(f"DROP DATABASE IF EXISTS `{url.database}`"))
            engine.dispose()


def folding_database(made: dict[str, URL], collation: str, use: str = "tests") -> URL:
    """The module's database for ``use`` whose default collation is ``collation``."""
    if (key := f"{use}:{collation}") not in made:
        name = f"cosmos_test_{os.getpid()}_{secrets.token_hex(4)}"
        engine = create_engine(admin_url("mariadb"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(
                text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {collation}")
            )
        engine.dispose()
        made[key] = admin_url("mariadb").set(database=name)
    return made[key]


@pytest.fixture(params=BACKENDS)
def exact_db(
    request: pytest.FixtureRequest, tmp_path: Path, folding_databases: dict[str, URL]
) -> Iterator[DatabaseConnection]:
    backend = str(request.param)
    if backend.startswith("mariadb-"):
        require_backend("mariadb")
        url = folding_database(folding_databases, backend.removeprefix("mariadb-"))
        conn = DatabaseConnection(url)
    else:
        conn = connect(backend, tmp_path)
    try:
        conn.create_tables()
        yield conn
    finally:
        if not conn.is_sqlite:
            with conn.engine.begin() as connection:
                for table in (Progress, Run, Prompt):
                    connection.execute(delete(table))  # type: ignore[arg-type]
        conn.close()


def _prompt(db: DatabaseConnection, prompt_id: str, model_type: str = "transfer") -> str:
    data = PromptCreate(
        id=prompt_id, model_type=model_type, prompt_text="p", inputs={}, parameters={}
    )
    return create_prompt(db, data).id


def _run(db: DatabaseConnection, run_id: str = BASE, prompt_id: str = "ps_é") -> str:
    _prompt(db, prompt_id)
    return create_run(db, {"id": run_id, "prompt_id": prompt_id}).id


def test_ids_differing_only_in_case_accent_or_spaces_do_not_collide(
    exact_db: DatabaseConnection,
) -> None:
    for prompt_id in (BASE, *LOOKALIKES):
        _prompt(exact_db, prompt_id)
        create_run(exact_db, {"id": prompt_id, "prompt_id": prompt_id})
    assert sorted(p.id for p in list_prompts(exact_db).items) == sorted((BASE, *LOOKALIKES))
    assert sorted(r.id for r in list_runs(exact_db).items) == sorted((BASE, *LOOKALIKES))
    with pytest.raises(IntegrityViolation):  # the same id twice still collides
        _prompt(exact_db, BASE)


@pytest.mark.parametrize("lookalike", LOOKALIKES)
def test_get_run_finds_only_the_exact_id(exact_db: DatabaseConnection, lookalike: str) -> None:
    run_id = _run(exact_db)
    assert get_run(exact_db, run_id).id == BASE
    with pytest.raises(RunNotFoundError):
        get_run(exact_db, lookalike)
    with pytest.raises(RunNotFoundError):
        get_run_detail(exact_db, lookalike)


@pytest.mark.parametrize("lookalike", ["GPU-1", "gpu-1 ", "gpü-1"])
def test_heartbeat_of_a_lookalike_worker_is_refused(
    exact_db: DatabaseConnection, lookalike: str
) -> None:
    _run(exact_db)
    claimed = claim_next_run(exact_db, "gpu-1")
    assert claimed is not None
    heartbeat(exact_db, BASE, "gpu-1")
    with pytest.raises(WorkerMismatchError):
        heartbeat(exact_db, BASE, lookalike)


@pytest.mark.parametrize("lookalike", LOOKALIKES)
def test_heartbeat_transition_and_progress_need_the_exact_run_id(
    exact_db: DatabaseConnection, lookalike: str
) -> None:
    _run(exact_db)
    assert claim_next_run(exact_db, "gpu-1") is not None
    with pytest.raises(RunNotFoundError):
        heartbeat(exact_db, lookalike, "gpu-1")
    with pytest.raises(RunNotFoundError):
        transition(exact_db, lookalike, "running")
    with pytest.raises(RunNotFoundError):
        transition(exact_db, lookalike, "running", expected_from="uploading")
    with pytest.raises(RunNotFoundError):
        record_progress(exact_db, lookalike, "inference", 10.0)
    assert transition(exact_db, BASE, "running").status == "running"
    event = record_progress(exact_db, BASE, "inference", 10.0)
    assert [e.id for e in progress_since(exact_db, BASE)] == [event.id]
    with pytest.raises(RunNotFoundError):
        progress_since(exact_db, lookalike)
    assert latest_progress(exact_db, [lookalike]) == {}
    assert set(latest_progress(exact_db, [BASE, lookalike])) == {BASE}


@pytest.mark.parametrize("lookalike", LOOKALIKES)
def test_filters_by_prompt_and_model_type_are_exact(
    exact_db: DatabaseConnection, lookalike: str
) -> None:
    _prompt(exact_db, "ps_é", model_type=BASE)
    run_id = create_run(exact_db, {"id": "run", "prompt_id": "ps_é"}).id
    assert [r.id for r in list_runs(exact_db, prompt_id="ps_é").items] == [run_id]
    assert [r.id for r in list_runs(exact_db, model_type=BASE).items] == [run_id]
    assert [p.id for p in list_prompts(exact_db, model_type=BASE).items] == ["ps_é"]
    assert list_runs(exact_db, model_type=lookalike).items == []
    assert list_prompts(exact_db, model_type=lookalike).items == []
    assert list_runs(exact_db, prompt_id=lookalike.replace("rs", "ps")).items == []
    assert claim_next_run(exact_db, "w", model_types=[lookalike]) is None
    with pytest.raises(PromptNotFoundError):
        create_run(exact_db, lookalike.replace("rs", "ps"))
    assert claim_next_run(exact_db, "w", model_types=[BASE]) is not None


def collations(url: URL) -> dict[str, str]:
    """``table.column`` → collation of every text column of the package's tables."""
    with DatabaseConnection(url) as conn, conn.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT CONCAT(table_name, '.', column_name), collation_name "
                "FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND collation_name IS NOT NULL "
                "AND table_name IN ('prompts', 'runs', 'progress')"
            )
        ).all()
    return {name: str(value) for name, value in rows}


@pytest.mark.parametrize("collation", FOLDING_COLLATIONS)
def test_migration_makes_a_folding_database_exact_and_back(
    collation: str, folding_databases: dict[str, URL]
) -> None:
    """0004 converts every text column (JSON kept valid); its downgrade restores the default."""
    require_backend("mariadb")
    url = folding_database(folding_databases, collation, use="migration")
    upgrade(url, "0002")

    json_columns = {"prompts.inputs", "prompts.parameters", "runs.execution_config"}
    json_columns |= {"runs.outputs", "runs.metadata"}
    before = collations(url)
    assert {before[name] for name in before.keys() - json_columns} == {collation}
    upgrade(url, "head")
    after = collations(url)
    assert {after[name] for name in after.keys() - json_columns} == {"utf8mb4_nopad_bin"}
    assert {after[name] for name in json_columns} == {"utf8mb4_bin"}
    assert schema_differences(url) == []
    with DatabaseConnection(url) as conn, conn.engine.connect() as connection:
        with pytest.raises(Exception, match="CONSTRAINT"):  # JSON_VALID still checked
            connection.execute(
                text(
                    "INSERT INTO prompts (id, model_type, prompt_text, inputs, parameters, "
                    "created_at) VALUES ('x', 'm', 'p', 'not json', '{}', NOW())"
                )
            )
    downgrade(url, "0002")
    assert collations(url) == before
    upgrade(url, "head")


def test_create_all_gives_the_collations_the_migrations_give(
    folding_databases: dict[str, URL],
) -> None:
    require_backend("mariadb")
    migrated = folding_database(folding_databases, "utf8mb4_general_ci", use="migrated")
    created = folding_database(folding_databases, "utf8mb4_general_ci", use="create_all")
    upgrade(migrated)
    engine = create_engine(created)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    assert collations(created) == collations(migrated)
    assert set(collations(created).values()) == {"utf8mb4_nopad_bin", "utf8mb4_bin"}
