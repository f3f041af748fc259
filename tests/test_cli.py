"""The cosmos-models command line, end to end against real database files (and PostgreSQL)."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cosmos_models import DatabaseConnection, RunStatus
from cosmos_models.cli import main
from cosmos_models.db.revisions import head_revision
from tests.factories import make_progress, make_prompt, make_run
from tests.legacy_fixtures import make_legacy_sqlite


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in-process; return (exit code, stdout, stderr)."""
    from cosmos_models.cli.app import out

    out.width = 200  # a wide terminal, so that table cells are not wrapped mid-text
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), captured.out, captured.err


def test_db_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "cli.db")
    code, out, _ = cli(capsys, "db", "upgrade", "--database", path)
    assert code == 0
    assert "revision before: (none)" in out
    assert f"revision after: {head_revision()}" in out
    assert cli(capsys, "db", "current", "-d", path)[1].strip() == f"{head_revision()} (head)"
    assert "(current)" in cli(capsys, "db", "history", "-d", path)[1]
    assert cli(capsys, "db", "check", "-d", path)[:2] == (0, "schema matches the models\n")
    backup = tmp_path / "copy.db"
    assert cli(capsys, "db", "backup", str(backup), "-d", path)[0] == 0
    assert cli(capsys, "db", "current", "-d", str(backup))[1].startswith(head_revision())
    code, _, err = cli(capsys, "db", "backup", str(backup), "-d", path)
    assert code == 1
    assert "already exists" in err
    code, out, _ = cli(capsys, "db", "downgrade", "--no-backup", "-d", path)  # one step
    assert code == 0
    assert f"revision before: {head_revision()}" in out
    assert cli(capsys, "db", "upgrade", "-d", path)[0] == 0
    assert cli(capsys, "db", "downgrade", "--no-backup", "-d", path, "--", "-1")[0] == 0
    code, out, _ = cli(capsys, "db", "check", "-d", path)  # an older revision
    assert code == 1
    assert "differs" in out
    assert cli(capsys, "db", "downgrade", "base", "--no-backup", "-d", path)[0] == 0
    code, out, err = cli(capsys, "db", "check", "-d", path)
    assert (code, out) == (1, "")
    assert err.startswith("error: not migrated: run cosmos-models db upgrade")


def test_errors_are_one_line_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "db", "current", "-d", "../escape.db")
    assert code == 1
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in out + err
    code, _, err = cli(capsys, "db", "current", "-d", "postgresql://u:hunter2@127.0.0.1:1/x")
    assert code == 1
    assert "hunter2" not in err
    assert cli(capsys, "no-such-command")[0] == 2
    assert cli(capsys, "prune", "--older-than", "soon")[0] == 2
    assert (
        cli(
            capsys,
            "prune",
            "--older-than",
            "1d",
            "--status",
            "running",
            "-d",
            str(tmp_path / "x.db"),
        )[0]
        == 2
    )
    code, _, err = cli(capsys, "db", "backup", str(tmp_path / "b.db"), "-d", ":memory:")
    assert code == 1
    assert "pg_dump" in err
    code, _, err = cli(
        capsys, "db", "backup", str(tmp_path / "b.db"), "-d", str(tmp_path / "nope.db")
    )
    assert code == 1
    assert "does not exist" in err


def test_legacy_adoption_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_legacy_sqlite(tmp_path / "legacy.db")
    code, out, _ = cli(capsys, "db", "upgrade", "-d", str(path))
    assert code == 0
    assert "backup: " in out
    assert "kept: 2 prompts, 2 runs, 6 progress" in out


def seed(database: str) -> None:
    old = datetime(2024, 1, 1, tzinfo=UTC)
    with DatabaseConnection(database) as db:
        db.create_tables()
        with db.get_session() as session:
            prompt = make_prompt(id="ps_cli", created_at=old)
            run = make_run(
                prompt,
                id="rs_cli_done",
                status=RunStatus.COMPLETED,
                created_at=old,
                completed_at=old,
            )
            active = make_run(prompt, id="rs_cli_active", status=RunStatus.RUNNING, created_at=old)
            session.add_all([prompt, run, active])
            session.flush()
            session.add_all(
                [
                    make_progress(run, 50.0, timestamp=old),
                    make_progress(active, 10.0, timestamp=old),
                ]
            )


@pytest.mark.parametrize("backend", ["sqlite-file", "postgresql"])
def test_stats_prune_restore(
    backend: str, db: DatabaseConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = db.url.render_as_string(hide_password=False)
    seed(url)
    code, out, _ = cli(capsys, "stats", "--json", "-d", url)
    assert code == 0
    stats = json.loads(out)
    assert stats["rows"] == {"prompts": 1, "runs": 2, "progress": 2}
    assert stats["runs_by_status"] == {"completed": 1, "running": 1}
    assert stats["oldest"]["runs"].startswith("2024-01-01T00:00:00")
    assert "runs by status: completed 1, running 1" in cli(capsys, "stats", "-d", url)[1]
    assert (
        "would delete 1 runs and 1 progress rows"
        in cli(capsys, "prune", "--older-than", "30d", "--dry-run", "-d", url)[1]
    )
    archive = tmp_path / "a.jsonl.gz"
    code, out, _ = cli(capsys, "prune", "--older-than", "30d", "--archive", str(archive), "-d", url)
    assert code == 0
    assert "deleted 1 runs and 1 progress rows in 1 batches" in out
    assert "archived 3 rows" in out
    code, out, _ = cli(capsys, "restore", str(archive), "-d", url)
    assert code == 0
    assert "restored 0 prompts, 1 runs, 1 progress; 1 rows were already present" in out


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "cosmos-models"
    result = subprocess.run(
        [str(script), "db", "upgrade", "-d", str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"revision after: {head_revision()}" in result.stdout
    assert (
        subprocess.run([str(script), "--bogus"], capture_output=True, check=False).returncode == 2
    )
