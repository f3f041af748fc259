"""An app's own tables beside ours (examples/app_tables): own metadata, own Alembic history."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select
from sqlmodel import Field, SQLModel

from cosmos_models import (
    DatabaseConnection,
    IntegrityViolation,
    app_metadata,
    app_tables,
    check_schema,
    create_app_tables,
    create_run,
    delete_run,
    include_app_object,
)
from cosmos_models.db.migrate import downgrade, schema_differences, upgrade
from cosmos_models.db.revisions import VERSION_TABLE
from cosmos_models.models.types import EXACT_TEXT_TABLE_OPTIONS
from tests.databases import URL_BACKENDS, fresh_url
from tests.factories import new_prompt

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "app_tables"


@pytest.fixture
def reviews() -> Iterator[object]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import reviews

        yield reviews
    finally:
        sys.path.remove(str(EXAMPLE))


def app_config(url: str) -> Config:
    config = Config(str(EXAMPLE / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@pytest.mark.parametrize("backend", URL_BACKENDS)
def test_the_example_app_history_lives_beside_ours(
    backend: str, tmp_path: Path, reviews: object
) -> None:
    from reviews import RunReview, metadata  # type: ignore[import-not-found]

    with fresh_url(backend, tmp_path) as url:
        upgrade(url, report=lambda _: None)  # ours first: the app's foreign keys refer to runs
        command.upgrade(app_config(url), "head")
        with DatabaseConnection(url) as db:
            assert check_schema(db)  # our history is untouched by the app's
            assert schema_differences(db) == []  # and ours does not see the app's table
            with db.connect(read_only=True) as connection:
                names = set(inspect(connection).get_table_names())
                assert {"app_run_reviews", "app_reviews_version", VERSION_TABLE} <= names
                # The app's autogenerate proposes nothing: not its table, not dropping ours.
                context = MigrationContext.configure(
                    connection,
                    opts={
                        "include_object": include_app_object,
                        "version_table": "app_reviews_version",
                    },
                )
                assert compare_metadata(context, metadata) == []
            run_id = create_run(db, new_prompt(db)).id
            with db.get_session() as session:
                session.add(RunReview(run_id=run_id, reviewer="ana", stars=4))
            with pytest.raises(IntegrityViolation), db.get_session() as session:
                session.add(RunReview(run_id="no-such-run", reviewer="ana", stars=4))
        # Our migrations, down a step and back up, leave the app's table and rows alone.
        downgrade(url, "0004", report=lambda _: None)
        upgrade(url, report=lambda _: None)
        with DatabaseConnection(url) as db:
            with db.connect(read_only=True) as connection:
                reviews_left = connection.execute(select(RunReview.__table__)).all()  # type: ignore[attr-defined]
            assert [(row.run_id, row.stars) for row in reviews_left] == [(run_id, 4)]
            delete_run(db, run_id)  # the review goes with its run (ON DELETE CASCADE)
            with db.connect(read_only=True) as connection:
                assert connection.execute(select(RunReview.__table__)).all() == []  # type: ignore[attr-defined]
        command.downgrade(app_config(url), "base")
        with DatabaseConnection(url) as db, db.connect(read_only=True) as connection:
            names = set(inspect(connection).get_table_names())
            assert "app_run_reviews" not in names
            assert {"prompts", "runs", "progress", VERSION_TABLE} <= names
            assert check_schema(db)


def test_an_app_table_without_our_metadata_would_not_resolve_runs() -> None:
    # Why app_metadata(): on a MetaData without a "runs" table the foreign key cannot resolve.
    plain = MetaData()

    class Plain(SQLModel, registry=__import__("sqlalchemy.orm").orm.registry(metadata=plain)):
        pass

    class Orphan(Plain, table=True):
        id: int | None = Field(default=None, primary_key=True)
        run_id: str = Field(foreign_key="runs.id")

    with pytest.raises(Exception, match="runs"):
        plain.sorted_tables[0].foreign_keys.pop().column  # noqa: B018


def test_create_app_tables_creates_only_the_app_tables(db: DatabaseConnection) -> None:
    metadata = app_metadata()

    class Base(SQLModel, registry=__import__("sqlalchemy.orm").orm.registry(metadata=metadata)):
        pass

    class Note(Base, table=True):
        __tablename__ = "app_test_notes"
        __table_args__ = (EXACT_TEXT_TABLE_OPTIONS,)  # MariaDB: the collation of prompts.id
        id: int | None = Field(default=None, primary_key=True)
        prompt_id: str = Field(foreign_key="prompts.id", ondelete="CASCADE", max_length=255)

    assert [table.name for table in app_tables(metadata)] == ["app_test_notes"]
    assert include_app_object(None, "runs", "table", True, None) is False
    assert include_app_object(None, VERSION_TABLE, "table", True, None) is False
    assert include_app_object(None, "app_test_notes", "table", False, None) is True
    assert include_app_object(None, "ix_x", "index", False, None) is True
    create_app_tables(db, metadata)
    try:
        prompt_id = new_prompt(db)
        with db.get_session() as session:
            session.add(Note(prompt_id=prompt_id))
        with db.connect(read_only=True) as connection:
            assert len(connection.execute(select(Note.__table__)).all()) == 1  # type: ignore[attr-defined]
    finally:
        with db.begin() as connection:
            Note.__table__.drop(connection)  # type: ignore[attr-defined]
