"""Deleting a prompt or a run through the ORM deletes its children on any engine, in bulk."""

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, delete, event, func, insert, select
from sqlmodel import Session

from cosmos_models import DatabaseConnection, Progress, Prompt, Run, metadata
from cosmos_models.db.tables import PROGRESS, PROMPTS, RUNS
from tests.factories import make_progress, make_prompt, make_run


@pytest.fixture
def plain_engine() -> Iterator[Engine]:
    """The design's testing pattern: no pragma, so SQLite enforces no foreign key."""
    engine = create_engine("sqlite:///:memory:")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def counts(session: Session) -> tuple[int, int, int]:
    """Rows left in prompts, runs and progress."""
    return tuple(  # type: ignore[return-value]
        session.scalar(select(func.count()).select_from(table))
        for table in (PROMPTS, RUNS, PROGRESS)
    )


def add_family(session: Session, *, runs: int = 2, events: int = 3) -> tuple[str, list[str]]:
    """A prompt with ``runs`` runs of ``events`` progress events each; return the ids."""
    prompt = make_prompt()
    run_list = [make_run(prompt) for _ in range(runs)]
    session.add(prompt)
    session.add_all(run_list)
    session.add_all(make_progress(run, float(i)) for run in run_list for i in range(events))
    session.commit()
    return prompt.id, [run.id for run in run_list]


def load(session: Session, how: str, prompt_id: str) -> list[Run | Progress]:
    """Load runs and progress the way an application might; return them (the map is weak)."""
    if how == "rows":
        return [*session.scalars(select(Run)), *session.scalars(select(Progress))]
    if how == "progress":
        return list(session.scalars(select(Progress)))
    if how == "collections":
        prompt = session.get(Prompt, prompt_id)
        assert prompt is not None
        return [*prompt.runs, *(event for run in prompt.runs for event in run.progress)]
    return []


# -- the design's testing pattern: plain engine, plain Session ---------------------------------


@pytest.mark.parametrize("how", ["nothing", "rows", "expired rows", "progress", "collections"])
def test_deleting_a_prompt_deletes_its_runs_and_progress_on_a_plain_engine(
    plain_engine: Engine, how: str
) -> None:
    with Session(plain_engine) as session:
        kept_id, _ = add_family(session, runs=1)
        doomed_id, doomed_runs = add_family(session)
        children = load(session, how.removeprefix("expired "), doomed_id)
        runs_of = [child.run_id if isinstance(child, Progress) else child.id for child in children]
        if how.startswith("expired"):
            session.expire_all()  # as after a commit: the session must read their foreign keys
        session.delete(session.get(Prompt, doomed_id))
        session.commit()
        assert counts(session) == (1, 1, 3)
        assert session.get(Prompt, kept_id) is not None
        assert session.scalars(select(Run.prompt_id)).all() == [kept_id]
        # Loaded children of the deleted prompt left the session with their rows; others stay.
        for child, run_id in zip(children, runs_of, strict=True):
            assert (child in session) is (run_id not in doomed_runs)
        expected = {"nothing": 0, "rows": 12, "expired rows": 12, "progress": 9, "collections": 8}
        assert len(children) == expected[how]


def test_deleting_a_run_deletes_its_progress_and_keeps_its_prompt(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        prompt_id, (doomed_id, kept_id) = add_family(session)
        session.delete(session.get(Run, doomed_id))
        session.commit()
        assert counts(session) == (1, 1, 3)
        assert session.scalars(select(Progress.run_id).distinct()).all() == [kept_id]
        assert session.get(Prompt, prompt_id) is not None


def test_bulk_orm_deletes_cascade(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        kept_id, _ = add_family(session, runs=1)
        doomed_id, (run_a, _) = add_family(session)
        session.execute(delete(Run).where(Run.id == run_a))
        assert counts(session) == (2, 2, 6)
        session.execute(delete(Prompt).where(Prompt.id == doomed_id))
        assert counts(session) == (1, 1, 3)
        session.execute(delete(Prompt))
        assert counts(session) == (0, 0, 0)
        session.commit()
    assert kept_id != doomed_id


def test_bulk_delete_with_bound_parameters_cascades_only_what_it_matches(
    plain_engine: Engine,
) -> None:
    from sqlalchemy import bindparam

    with Session(plain_engine) as session:
        kept_id, _ = add_family(session)
        doomed_id, _ = add_family(session)
        statement = delete(Prompt).where(Prompt.id == bindparam("doomed"))
        session.execute(statement, {"doomed": doomed_id})
        session.commit()
        assert counts(session) == (1, 2, 6)
        assert session.scalars(select(Run.prompt_id).distinct()).all() == [kept_id]


def test_deletes_of_more_ids_than_one_in_list_holds(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        prompt_id, run_ids = add_family(session, runs=1201, events=1)
        session.execute(delete(Run).where(Run.id.in_(run_ids[:1100])))  # type: ignore[attr-defined]
        assert counts(session) == (1, 101, 101)
        for run_id in run_ids[1100:]:
            session.delete(session.get(Run, run_id))
        session.commit()
        assert counts(session) == (1, 0, 0)
        assert session.get(Prompt, prompt_id) is not None


def test_a_rolled_back_delete_keeps_every_child(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        prompt_id, _ = add_family(session)
        session.delete(session.get(Prompt, prompt_id))
        session.flush()
        assert counts(session) == (0, 0, 0)
        session.rollback()
        assert counts(session) == (1, 2, 6)


def test_the_cascade_reads_no_progress_row(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        prompt_id, run_ids = add_family(session, runs=2, events=0)
        session.execute(
            insert(PROGRESS),
            [
                {
                    "run_id": run_ids[i % 2],
                    "seq": i // 2 + 1,
                    "stage": "inference",
                    "percentage": i / 10,
                }
                for i in range(1000)
            ],
        )
        session.commit()
        session.expunge_all()
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(" ".join(str(args[2]).split()))

        event.listen(plain_engine, "before_cursor_execute", record)
        try:
            session.delete(session.get(Run, run_ids[0]))
            session.flush()
            assert counts(session) == (1, 1, 500)
            session.delete(session.get(Prompt, prompt_id))
            session.commit()
        finally:
            event.remove(plain_engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.startswith("SELECT")]
    assert not [s for s in selects if "FROM progress" in s and "count" not in s], selects
    deletes = [s.split(" WHERE")[0] for s in statements if s.startswith("DELETE")]
    assert deletes == [
        "DELETE FROM progress",
        "DELETE FROM runs",
        "DELETE FROM progress",
        "DELETE FROM runs",
        "DELETE FROM prompts",
    ]
    with Session(plain_engine) as session:
        assert counts(session) == (0, 0, 0)


# -- every backend of the db fixture -------------------------------------------------------------


def test_deleting_a_prompt_through_a_session_counts_rows_left(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        kept_id, _ = add_family(session, runs=1)
        doomed_id, _ = add_family(session)
    with db.get_session() as session:
        session.delete(session.get(Prompt, doomed_id))
    with db.get_session() as session:
        assert counts(session) == (1, 1, 3)
        assert session.scalars(select(Run.prompt_id)).all() == [kept_id]


def test_deleting_a_run_through_a_session_counts_rows_left(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        prompt_id, (doomed_id, kept_id) = add_family(session)
    with db.get_session() as session:
        session.delete(session.get(Run, doomed_id))
    with db.get_session() as session:
        assert counts(session) == (1, 1, 3)
        assert session.scalars(select(Progress.run_id).distinct()).all() == [kept_id]
        assert session.get(Prompt, prompt_id) is not None


def test_bulk_orm_delete_through_a_session_counts_rows_left(db: DatabaseConnection) -> None:
    with db.get_session() as session:
        kept_id, _ = add_family(session, runs=1)
        doomed_id, _ = add_family(session)
        session.scalars(select(Progress)).all()
    with db.get_session() as session:
        session.scalars(select(Progress)).all()
        session.execute(delete(Prompt).where(Prompt.id == doomed_id))
    with db.get_session() as session:
        assert counts(session) == (1, 1, 3)
        assert session.scalars(select(Run.prompt_id)).all() == [kept_id]


def test_deleting_progress_deletes_nothing_else(plain_engine: Engine) -> None:
    with Session(plain_engine) as session:
        _, (run_a, run_b) = add_family(session)
        first = session.scalars(select(Progress).where(Progress.run_id == run_a)).first()
        session.delete(first)
        session.commit()
        assert counts(session) == (1, 2, 5)
        session.execute(delete(Progress).where(Progress.run_id == run_b))
        session.commit()
        assert counts(session) == (1, 2, 2)
