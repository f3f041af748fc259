"""Reliability: PostgreSQL restarted under a connection pool that is in use."""

import os
import shutil
import subprocess
import time

import pytest
from sqlalchemy import func, select, text

from cosmos_models import DatabaseConnection, DatabaseError, Prompt, init_database
from tests.backends import backends_required, server_database
from tests.conftest import require_backend
from tests.factories import make_prompt

pytestmark = pytest.mark.reliability


def _restart_postgres() -> None:
    tool = shutil.which("pg_ctlcluster")
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if tool is None or not versions:
        message = "cannot restart PostgreSQL here (no pg_ctlcluster)"
        if backends_required():
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(
        [tool, "--skip-systemctl-redirect", versions[-1], "main", "restart"],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 60
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


def test_postgres_restart_mid_batch(tmp_path: object) -> None:
    require_backend("postgresql")
    with server_database("postgresql") as url:
        with init_database(url) as database:
            for _ in range(3):  # fill the pool with live connections
                with database.get_session() as session:
                    session.add(make_prompt())
            with pytest.raises(DatabaseError), database.get_session() as session:
                session.add_all(make_prompt(id=f"ps_half_{i}") for i in range(50))
                session.flush()  # the batch is in the server, not committed
                _restart_postgres()
            # The pool's connections died with the server; found closed at checkout, replaced.
            with database.get_session() as session:
                session.add(make_prompt(id="ps_after_restart"))
            with database.get_session(read_only=True) as session:
                assert session.scalar(select(func.count()).select_from(Prompt)) == 4
                assert (
                    session.scalar(
                        select(func.count()).select_from(Prompt).where(Prompt.id.like("ps_half_%"))
                    )
                    == 0
                )
        with DatabaseConnection(url) as fresh, fresh.engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
