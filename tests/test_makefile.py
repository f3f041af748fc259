"""The Makefile's database targets, as a newcomer runs them (the README's commands)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def make(target: str, database: Path, *extra: str) -> str:
    env = {**os.environ, "COSMOS_DATABASE_URL": str(database)}
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target, *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "cosmos-models").exists(),
    reason="needs make and the checkout's .venv (made by `make test`)",
)
def test_migrate_current_downgrade(tmp_path: Path) -> None:
    database = tmp_path / "made.db"
    assert "revision before: (none)" in make("migrate", database)
    head = make("current", database).strip().splitlines()[-1]
    assert head.endswith("(head)")
    stepped = make("downgrade", database)  # one revision down
    assert f"revision before: {head.split()[0]}" in stepped
    assert f"revision after: {head.split()[0]}" not in stepped
    assert "revision after: (none)" in make("downgrade", database, "rev=base")
    assert "schema matches the models" in make("migrations-check", database)
