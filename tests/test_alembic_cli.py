"""Plain ``alembic -c alembic.ini upgrade|downgrade`` takes the package's path: lock, backup,
adoption, logged; a downgrade that would drop data without a backup is refused in one line."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmos_models.db.migrate import current_revision
from cosmos_models.db.revisions import head_revision
from tests.backends import server_database
from tests.conftest import require_backend
from tests.legacy_fixtures import make_legacy_sqlite
from tests.test_cli import seed

ROOT = Path(__file__).resolve().parents[1]
ALEMBIC = Path(sys.executable).parent / "alembic"


def alembic(database: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ALEMBIC), "-c", str(ROOT / "alembic.ini"), *argv],
        env={**os.environ, "COSMOS_DATABASE_URL": database},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_upgrade_adopts_a_legacy_database_with_backup_and_log(tmp_path: Path) -> None:
    path = make_legacy_sqlite(tmp_path / "legacy.db")
    done = alembic(str(path), "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "backup: " in done.stderr
    assert "kept: 2 prompts, 2 runs, 6 progress" in done.stderr
    assert f"revision after: {head_revision()}" in done.stderr
    assert current_revision(path) == head_revision()
    assert len(list(tmp_path.glob("legacy.backup-legacy-*.db"))) == 1
    again = alembic(str(path), "upgrade", "head")
    assert again.returncode == 0
    assert "(no change)" in again.stderr


def test_upgrade_of_a_fresh_database(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "new.db"
    done = alembic(str(path), "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert "revision before: (none)" in done.stderr
    assert current_revision(path) == head_revision()


def test_bad_location_and_unknown_revision_fail_in_one_line(tmp_path: Path) -> None:
    for database, revision, why in (
        (str(tmp_path / ".." / "x.db"), "head", "path traversal"),
        (":memory:", "nope", "revision 'nope' is not known"),
    ):
        done = alembic(database, "upgrade", revision)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        (failed,) = [line for line in done.stderr.splitlines() if "refused:" in line]
        assert why in failed


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_backend("postgresql")
    with server_database("postgresql") as url:
        yield url.render_as_string(hide_password=False)


def test_downgrade_that_drops_data_is_refused_without_a_backup(postgres_url: str) -> None:
    seed(postgres_url)
    done = alembic(postgres_url, "downgrade", "base")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "would drop table progress (2 rows)" in done.stderr
    assert "cosmos-models db downgrade base --yes" in done.stderr
    assert current_revision(postgres_url) == head_revision()


def test_downgrade_of_a_sqlite_file_is_backed_up_first(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    seed(str(path))
    done = alembic(str(path), "downgrade", "base")
    assert done.returncode == 0, done.stderr
    assert "backup: " in done.stderr
    assert current_revision(path) is None
    assert len(list(tmp_path.glob("d.backup-*.db"))) == 1
