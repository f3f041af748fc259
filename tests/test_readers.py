"""The lean reads' own connections (``cosmos_models.db.readers``) and their faster processors.

Readers are reused, see every commit (autocommit: each SELECT its own snapshot), stay within
their number (the pool serves the rest), are closed with the database, dropped after an error,
replaced when the server closed them or they outlived ``pool_recycle``, and never touched in a
forked child. ``lean_result_processor`` gives what ``result_processor`` gives, value for value.
"""

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import Dialect, text, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    InvalidArgumentError,
    RunNotFoundError,
    RunStatus,
    create_prompt,
    create_run,
    get_run,
    progress_since,
)
from cosmos_models.db import lean
from cosmos_models.db import readers as readers_module
from cosmos_models.db.readers import KEEP, Readers
from cosmos_models.db.tables import RUNS
from cosmos_models.models.readmodels import typed_reader
from cosmos_models.models.types import (
    JSONDocument,
    StrEnumType,
    UTCDateTime,
    lean_result_processor,
)
from tests.backends import SERVER_BACKENDS
from tests.conftest import connect
from tests.test_json_filter_semantics import documents

PROMPT = {"model_type": "transfer", "prompt_text": "a city", "inputs": {}, "parameters": {}}


def _run(db: DatabaseConnection) -> str:
    prompt = create_prompt(db, PROMPT)
    return create_run(db, {"prompt_id": prompt.id, "execution_config": {"n": 1}}).id


def _usable(connection: Any) -> bool:
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
        cursor.close()
    except Exception:
        return False
    return True


def _idle(db: DatabaseConnection) -> list[Any]:
    return [connection for connection, _ in db.readers._idle]


def test_a_reader_is_reused_and_sees_each_commit(db: DatabaseConnection) -> None:
    run_id = _run(db)
    assert get_run(db, run_id).status == RunStatus.PENDING
    [reader] = _idle(db)
    with db.begin() as connection:  # another connection commits
        connection.execute(update(RUNS).where(RUNS.c.id == run_id).values(status="cancelled"))
    assert get_run(db, run_id).status == RunStatus.CANCELLED
    assert progress_since(db, run_id) == []
    assert _idle(db) == [reader]


def test_with_every_reader_lent_reads_use_the_pool(db: DatabaseConnection) -> None:
    run_id = _run(db)
    loans = [db.readers.acquire() for _ in range(KEEP)]
    assert all(loan is not None for loan in loans)
    assert db.readers.acquire() is None
    assert get_run(db, run_id).id == run_id  # on a pooled connection
    assert _idle(db) == []
    for loan in loans:
        assert loan is not None
        db.readers.release(loan)
    assert len(_idle(db)) == KEEP


def test_a_reader_that_raised_is_closed_and_not_lent_again(db: DatabaseConnection) -> None:
    run_id = _run(db)
    get_run(db, run_id)
    [reader] = _idle(db)
    with pytest.raises(DatabaseError) as caught:
        lean.fetch(db, "SELECT no_such_column FROM runs", ())
    assert "\n" not in str(caught.value)
    assert _idle(db) == []
    assert db.readers._count == 0
    assert not _usable(reader)
    assert get_run(db, run_id).id == run_id
    assert len(_idle(db)) == 1
    assert _idle(db) != [reader]


@pytest.mark.parametrize("backend", ["sqlite-file", *SERVER_BACKENDS])
def test_close_closes_the_readers_and_one_given_back_later(backend: str, tmp_path: Path) -> None:
    # No rows written: this connection closes itself, so no fixture empties the shared database.
    db = connect(backend, tmp_path)
    db.create_tables()
    with pytest.raises(RunNotFoundError):
        get_run(db, "rs_none")  # a read all the same: a reader is opened
    [idle] = _idle(db)
    lent = db.readers.acquire()
    assert lent is not None
    assert lent[0] is idle
    spare = db.readers.acquire()
    assert spare is not None
    db.readers.release(spare)
    db.close()
    assert not _usable(spare[0])
    assert _usable(lent[0])  # lent during close(): closed when given back
    db.readers.release(lent)
    assert not _usable(lent[0])
    assert db.readers.acquire() is None
    with pytest.raises(RuntimeError, match="closed"):
        get_run(db, "rs_none")


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_reader_past_pool_recycle_is_replaced(backend: str, db: DatabaseConnection) -> None:
    run_id = _run(db)
    with DatabaseConnection(db.url, pool_recycle=0) as recycling:
        get_run(recycling, run_id)
        [first] = _idle(recycling)
        get_run(recycling, run_id)
        [second] = _idle(recycling)
        assert second is not first
        assert not _usable(first)


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_a_reader_the_server_closed_is_replaced(backend: str, db: DatabaseConnection) -> None:
    run_id = _run(db)
    get_run(db, run_id)
    [reader] = _idle(db)
    cursor = reader.cursor()
    cursor.execute(
        "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    )
    [(server_id,)] = cursor.fetchall()
    cursor.close()
    with db.engine.connect() as admin:
        if backend == "postgresql":
            admin.execute(text("SELECT pg_terminate_backend(:id)"), {"id": server_id})
        else:
            admin.execute(text(f"KILL {int(server_id)}"))
        admin.commit()
    assert get_run(db, run_id).id == run_id  # found closed before use: a new one served it
    assert _idle(db) != [reader]


def test_a_forked_child_leaves_its_parents_readers_alone(db: DatabaseConnection) -> None:
    run_id = _run(db)
    get_run(db, run_id)
    [parents] = _idle(db)
    readers_module._count_fork()  # what a fork does in its child
    assert get_run(db, run_id).id == run_id
    [childs] = _idle(db)
    assert childs is not parents
    assert _usable(parents)  # neither closed nor dropped (a finalizer would close it)
    assert [connection for connection, _ in db.readers._inherited] == [parents]
    db.readers.close()  # closes the child's own only
    assert _usable(parents)
    parents.close()


def test_async_engines_keep_no_readers() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        assert Readers(engine.sync_engine, -1).acquire() is None
    finally:
        engine.sync_engine.dispose()


# -- lean_result_processor: the same values as result_processor -------------------------------

_DIALECTS: list[Dialect] = [
    sqlite.pysqlite.dialect(),
    mysql.pymysql.dialect(),
    postgresql.psycopg.dialect(),
]


def _outcome(process: Any, value: Any) -> tuple[str, Any]:
    try:
        found = process(value) if process is not None else value
    except Exception as exc:
        return "error", type(exc)
    if isinstance(found, datetime):
        return "value", (found, type(found), found.tzinfo)
    return "value", (found, type(found))


def _same_processing(column_type: Any, value: Any) -> None:
    for dialect in _DIALECTS:
        standard = column_type.dialect_impl(dialect).result_processor(dialect, None)
        fast = lean_result_processor(column_type, dialect, None)
        assert _outcome(fast, value) == _outcome(standard, value), (dialect.name, value)


_spaces = st.sampled_from(["", " ", "\n", "\t "])
_json_texts = st.one_of(
    st.builds(
        lambda doc, before, after, compact: (
            before + json.dumps(doc, separators=(",", ":") if compact else None) + after
        ),
        documents,
        _spaces,
        _spaces,
        st.booleans(),
    ),
    st.sampled_from(["", "{", '{"a": 1} x', "[1, 2]", "null", "3.5", '"text"']),
    st.text(max_size=8),
)


@settings(max_examples=300)
@given(st.one_of(_json_texts, st.none(), st.integers(), st.floats(allow_nan=False)))
def test_json_documents_are_read_as_by_core(value: Any) -> None:
    _same_processing(JSONDocument(), value)


_moments = st.datetimes(
    min_value=datetime(1000, 1, 2),
    max_value=datetime(9999, 12, 29),
    timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]),
)


@settings(max_examples=300)
@given(
    st.one_of(
        _moments,
        _moments.map(lambda m: m.replace(tzinfo=None).isoformat(" ", "microseconds")),
        _moments.map(lambda m: m.isoformat()),
        st.sampled_from(["2025-01-04 12:00:00", "2025-01-04 12:00:00.000000x", "not a time"]),
        st.none(),
    )
)
def test_timestamps_are_read_as_by_core(value: Any) -> None:
    _same_processing(UTCDateTime(), value)


@given(st.one_of(st.sampled_from([status.value for status in RunStatus]), st.text(max_size=10)))
def test_statuses_are_read_as_by_core(value: str) -> None:
    _same_processing(StrEnumType(RunStatus), value)
    _same_processing(StrEnumType(RunStatus), None)


@pytest.mark.parametrize("all_lent", [False, True])
def test_a_server_down_is_a_database_error_on_both_paths(
    all_lent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DatabaseConnection("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/none") as down:
        if all_lent:
            monkeypatch.setattr(down.readers, "acquire", lambda: None)
        with pytest.raises(DatabaseError) as caught:
            get_run(down, "rs_1")
        assert "s3cret" not in str(caught.value)
        assert down.readers._count == 0


def test_an_implementation_with_its_own_processor_keeps_the_standard_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A driver that hands back something the implementation must convert first: the lean
    # processors step aside for the standard chain (implementation, then the decorator).
    dialect = sqlite.pysqlite.dialect()
    cases: list[tuple[Any, str, Any]] = [
        (UTCDateTime(), " 2025-01-04 12:00:00.000000 ", datetime(2025, 1, 4, 12, tzinfo=UTC)),
        (StrEnumType(RunStatus), " completed ", RunStatus.COMPLETED),
    ]
    for column_type, stored, expected in cases:
        implementation = column_type.dialect_impl(dialect).impl_instance
        monkeypatch.setattr(
            type(implementation), "result_processor", lambda *_: lambda value: value.strip()
        )
        process = lean_result_processor(column_type, dialect, None)
        assert process is not None
        assert process(stored) == expected


def test_a_model_of_one_field_is_read_from_its_column() -> None:
    class Only(BaseModel):
        name: str

    read = typed_reader(Only, ("id", "name"), (None, str.upper))
    assert read(("x", "a")) == Only(name="A")
    assert read(("x", None)).name is None  # NULL stays None: no processor call
    with pytest.raises(InvalidArgumentError, match="no column for name"):
        typed_reader(Only, ("id",), (None,))
