"""Reliability: one SQLite file, many writer processes and dashboard readers at once.

``COSMOS_RELIABILITY_SCALE`` sizes the work: 1 (``make reliability``) is the full 2,000 events
per writer; the default 0.1 keeps ``make test`` quick.
"""

import os
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from cosmos_models import RunStatus, init_database, transition
from cosmos_models.db.tables import PROGRESS
from tests.concurrency import dashboard_reader, progress_writer, sequence_of, together
from tests.factories import pending_runs

pytestmark = pytest.mark.reliability

SCALE = float(os.environ.get("COSMOS_RELIABILITY_SCALE", "0.1"))
WRITERS, READERS, BATCH = 8, 4, 20
EVENTS = max(BATCH, round(2_000 * SCALE / BATCH) * BATCH)  # whole batches


def test_writers_and_dashboards_share_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with init_database(path) as db:
        run_ids = pending_runs(db, WRITERS)
        for run_id in run_ids:
            transition(db, run_id, RunStatus.RUNNING)
    url = f"sqlite:///{path}"
    outcomes = together(
        [
            (progress_writer, (url, run_id, writer, EVENTS, BATCH))
            for writer, run_id in enumerate(run_ids)
        ]
        + [(dashboard_reader, (url, run_ids, EVENTS, BATCH))] * READERS
    )
    # No error of any kind escaped a writer or a reader ("database is locked" included).
    errors = [outcome for outcome in outcomes if isinstance(outcome, str) and outcome != "ok"]
    assert errors == []
    assert Counter(outcome == "ok" for outcome in outcomes)[True] == WRITERS
    reports = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    assert len(reports) == READERS
    assert [report["problems"] for report in reports] == [[]] * READERS
    assert all(report["polls"] > 0 for report in reports)

    with init_database(path) as db, db.engine.connect() as connection:
        rows = connection.execute(
            select(PROGRESS.c.run_id, PROGRESS.c.message).order_by(PROGRESS.c.id)
        ).all()
    assert len(rows) == WRITERS * EVENTS
    for run_id in run_ids:
        # In id order, each writer's events are its own sequence: ids grew with it.
        sequence = [sequence_of(row.message) for row in rows if row.run_id == run_id]
        assert sequence == list(range(EVENTS)), run_id
