"""Deletes that cascade through the ORM on any engine: a prompt takes its runs and their progress.

The foreign keys say ``ON DELETE CASCADE`` and the relationships say ``passive_deletes=True``
(the ORM does not load children to delete them one by one). But SQLite enforces foreign keys only
with ``PRAGMA foreign_keys=ON`` on every connection, which a plain ``create_engine`` (the design's
testing pattern) does not set, so there the children of a deleted prompt or run would survive.
These listeners, registered for every ``Session`` (``sqlmodel.Session`` included), do the
cascade's work in bulk, one ``DELETE`` per level, without loading the children:

* flushing a session where a ``Prompt`` or ``Run`` is marked deleted (``session.delete``), and
* an ORM-enabled bulk ``session.execute(delete(Prompt).where(…))`` (or ``delete(Run)``).

Children already loaded in the session are expunged, so the session does not delete them a
second time (which would warn that 0 rows matched) nor hand out objects whose rows are gone.
The database-level cascade stays: it covers plain SQL, and does nothing after these deletes.
"""

from collections.abc import Collection, Iterable, Iterator
from typing import Any, Final

from sqlalchemy import Connection, Table, delete, event, inspect, select
from sqlalchemy.orm import InstanceState, ORMExecuteState, Session, UOWTransaction

from cosmos_models.models.types import metadata

# Ids per IN list: far below every backend's limit on bound parameters (SQLite's is 32,766).
_CHUNK: Final = 500


def _table(name: str) -> Table:
    return metadata.tables[name]


def _chunks(ids: Collection[Any]) -> Iterator[list[Any]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def _row_id(state: InstanceState[Any]) -> Any:
    """The id of a persistent object (its one-column primary key)."""
    return state.identity[0] if state.identity else None


def _loaded(session: Session, table: Table) -> list[InstanceState[Any]]:
    """States of ``table``'s rows in the identity map (marked deleted or not)."""
    return [
        state
        for state in session.identity_map.all_states()
        if state.mapper.local_table is table and state.identity is not None
    ]


def _parent_ids(
    connection: Connection, table: Table, column: str, states: Iterable[InstanceState[Any]]
) -> dict[Any, Any]:
    """Map the id of each loaded row to its foreign key ``column``.

    Loaded values are taken as they are; rows whose value is expired are read in one ``SELECT``
    of id and foreign key, bounded by what the session holds, never by the table's size.
    """
    parents: dict[Any, Any] = {}
    missing: list[Any] = []
    for state in states:
        row_id = _row_id(state)
        if column in state.dict:
            parents[row_id] = state.dict[column]
        else:
            missing.append(row_id)
    for chunk in _chunks(missing):
        rows = connection.execute(
            select(table.c.id, table.c[column]).where(table.c.id.in_(chunk))
        ).all()
        parents.update({row[0]: row[1] for row in rows})
    return parents


def delete_children(
    session: Session, *, prompt_ids: Collection[str] = (), run_ids: Collection[str] = ()
) -> None:
    """Delete the runs of ``prompt_ids``, and the progress of those runs and of ``run_ids``.

    One bulk ``DELETE`` per level (per 500 ids), in the session's transaction; the parents
    themselves are left to the caller. Loaded children of those parents are expunged from
    ``session``. Raises what the database raises (``sqlalchemy.exc.DBAPIError``).
    """
    if not prompt_ids and not run_ids:
        return
    parent_prompts = set(prompt_ids)
    runs, progress = _table("runs"), _table("progress")
    connection = session.connection()
    # Which loaded objects the deletes will remove: decided before they run, while the rows
    # that say which prompt a run belongs to still exist.
    loaded_runs = _loaded(session, runs)
    loaded_progress = _loaded(session, progress)
    run_of_progress = _parent_ids(connection, progress, "run_id", loaded_progress)
    prompt_of_run: dict[Any, Any] = {}
    if parent_prompts:
        prompt_of_run = _parent_ids(connection, runs, "prompt_id", loaded_runs)
        unknown = set(run_of_progress.values()) - prompt_of_run.keys() - set(run_ids)
        for chunk in _chunks(unknown):
            rows = connection.execute(
                select(runs.c.id, runs.c.prompt_id).where(runs.c.id.in_(chunk))
            ).all()
            prompt_of_run.update({row[0]: row[1] for row in rows})
    doomed_runs = set(run_ids) | {run for run, p in prompt_of_run.items() if p in parent_prompts}

    for chunk in _chunks(parent_prompts):
        runs_of_chunk = select(runs.c.id).where(runs.c.prompt_id.in_(chunk))
        connection.execute(delete(progress).where(progress.c.run_id.in_(runs_of_chunk)))
        connection.execute(delete(runs).where(runs.c.prompt_id.in_(chunk)))
    # Runs of a deleted prompt lost their progress above already.
    for chunk in _chunks(
        set(run_ids) - {r for r, p in prompt_of_run.items() if p in parent_prompts}
    ):
        connection.execute(delete(progress).where(progress.c.run_id.in_(chunk)))

    doomed = [s for s in loaded_runs if prompt_of_run.get(_row_id(s)) in parent_prompts]
    doomed += [s for s in loaded_progress if run_of_progress.get(_row_id(s)) in doomed_runs]
    for state in doomed:
        instance = state.obj()
        # Expunging a run cascades to its loaded progress: those may be gone already.
        if instance is not None and instance in session:
            session.expunge(instance)


def _deleted_ids(session: Session, table: Table) -> set[Any]:
    return {
        _row_id(state)
        for state in (inspect(obj) for obj in session.deleted)
        if state.mapper.local_table is table and state.identity is not None
    }


@event.listens_for(Session, "before_flush")
def _cascade_flushed_deletes(session: Session, _: UOWTransaction, __: object) -> None:
    if not session.deleted:
        return
    prompt_ids = _deleted_ids(session, _table("prompts"))
    run_ids = _deleted_ids(session, _table("runs"))
    delete_children(session, prompt_ids=prompt_ids, run_ids=run_ids)


@event.listens_for(Session, "do_orm_execute")
def _cascade_bulk_deletes(orm_execute_state: ORMExecuteState) -> None:
    if not orm_execute_state.is_delete or orm_execute_state.bind_mapper is None:
        return
    table = orm_execute_state.bind_mapper.local_table
    if table is not _table("prompts") and table is not _table("runs"):
        return
    statement: Any = orm_execute_state.statement
    matched = select(table.c.id)
    if statement.whereclause is not None:
        matched = matched.where(statement.whereclause)
    session = orm_execute_state.session
    ids = set(session.execute(matched, orm_execute_state.parameters).scalars())
    if table is _table("prompts"):
        delete_children(session, prompt_ids=ids)
    else:
        delete_children(session, run_ids=ids)
