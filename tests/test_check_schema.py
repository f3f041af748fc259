"""check_schema: app processes check the schema is at head instead of migrating in every worker."""

from pathlib import Path

import pytest

from cosmos_models import (
    DatabaseConnection,
    DatabaseError,
    MigrationError,
    SchemaNotCurrentError,
    check_schema,
)
from cosmos_models.db.migrate import downgrade, upgrade
from cosmos_models.db.revisions import head_revision
from tests.databases import URL_BACKENDS, fresh_url


@pytest.mark.parametrize("backend", URL_BACKENDS)
def test_check_schema_names_the_command_until_the_database_is_at_head(
    backend: str, tmp_path: Path
) -> None:
    with fresh_url(backend, tmp_path) as url, DatabaseConnection(url) as db:
        with pytest.raises(SchemaNotCurrentError, match="not migrated") as caught:
            check_schema(db)
        assert "cosmos-models db upgrade" in str(caught.value)
        assert isinstance(caught.value, MigrationError)
        assert caught.value.current is None
        upgrade(db, "0004")
        with pytest.raises(SchemaNotCurrentError, match="at revision '0004'"):
            check_schema(db)
        upgrade(db)
        assert check_schema(db) == head_revision()
        downgrade(db, "0003", report=lambda _: None)
        with pytest.raises(SchemaNotCurrentError) as behind:
            check_schema(db)
        assert (behind.value.current, behind.value.head) == ("0003", head_revision())


def test_check_schema_writes_nothing_and_reports_an_unreachable_server(tmp_path: Path) -> None:
    with DatabaseConnection(tmp_path / "empty.db") as db, pytest.raises(SchemaNotCurrentError):
        check_schema(db)
    with DatabaseConnection(tmp_path / "empty.db") as db, db.connect() as connection:
        assert connection.exec_driver_sql("SELECT name FROM sqlite_master").all() == []
    down = DatabaseConnection("postgresql+psycopg://nobody:secret@127.0.0.1:9/x")
    with down, pytest.raises(DatabaseError) as caught:
        check_schema(down)
    assert "secret" not in str(caught.value)
