"""Model-based test of the worker hand-off: random steps, every run where the model says it is.

A hypothesis state machine adds pending runs, lets three workers claim and hand off (completing
any part of what they hold, claiming up to a few more, sometimes with a run in the batch that is
in the way: another worker's, a pending one, a final one, a missing id) and cancels runs under
their workers. A hand-off must either complete exactly the runs given and claim exactly the
oldest pending runs, or raise for the run in the way and change nothing. After every step each
run's status and holder in the database are the model's: no run claimed twice, none lost.
"""

import itertools
import os
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from cosmos_models import (
    DatabaseConnection,
    RunNotFoundError,
    RunStatus,
    TransitionConflictError,
    WorkerMismatchError,
    cancel_run,
    complete_and_claim_runs,
    create_prompt,
    create_run,
)
from cosmos_models.db.tables import RUNS
from tests.backends import ALL_BACKENDS
from tests.conftest import _empty_tables, connect
from tests.factories import at

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
WORKERS = ("w0", "w1", "w2")
INTRUDERS = ("none", "theirs", "pending", "final", "missing")
_REFUSAL = {
    "theirs": WorkerMismatchError,
    "pending": WorkerMismatchError,
    "final": TransitionConflictError,
    "missing": RunNotFoundError,
}


class HandOffMachine(RuleBasedStateMachine):
    """The database against a model: run id → (status, holder), and creation order."""

    db: DatabaseConnection

    def __init__(self) -> None:
        super().__init__()
        _empty_tables(self.db)
        self.clock = itertools.count(1)
        self.prompt_id = create_prompt(
            self.db, {"model_type": "transfer", "prompt_text": "t", "inputs": {}, "parameters": {}}
        ).id
        self.model: dict[str, tuple[RunStatus, str | None]] = {}
        self.created: list[str] = []  # oldest first: each run is created a second later

    def _now(self) -> datetime:
        return at(next(self.clock))

    def _of(self, status: RunStatus, holder: str | None = None) -> list[str]:
        return [
            run_id
            for run_id in self.created
            if self.model[run_id][0] == status
            and (holder is None or self.model[run_id][1] == holder)
        ]

    @rule(count=st.integers(1, 4))
    def add_runs(self, count: int) -> None:
        for _ in range(count):
            run_id = create_run(self.db, self.prompt_id, now=self._now()).id
            self.model[run_id] = (RunStatus.PENDING, None)
            self.created.append(run_id)

    @rule(
        worker=st.sampled_from(WORKERS),
        limit=st.integers(0, 3),
        intruder=st.sampled_from(INTRUDERS),
        data=st.data(),
    )
    def hand_off(self, worker: str, limit: int, intruder: str, data: st.DataObject) -> None:
        held = self._of(RunStatus.RUNNING, worker)
        batch = data.draw(st.lists(st.sampled_from(held), unique=True) if held else st.just([]))
        candidates = {
            "none": [],
            "theirs": [r for r in self._of(RunStatus.RUNNING) if self.model[r][1] != worker],
            "pending": self._of(RunStatus.PENDING),
            "final": self._of(RunStatus.COMPLETED, worker) + self._of(RunStatus.CANCELLED, worker),
            "missing": ["rs_missing"],
        }[intruder]
        if candidates:
            position = data.draw(st.integers(0, len(batch)))
            batch.insert(position, data.draw(st.sampled_from(candidates)))
            with pytest.raises(_REFUSAL[intruder]):
                complete_and_claim_runs(self.db, worker, batch, limit=limit, to="running")
            return  # the invariant checks that nothing changed
        expected = self._of(RunStatus.PENDING)[:limit]
        claimed = complete_and_claim_runs(
            self.db, worker, batch, limit=limit, to="running", now=self._now()
        )
        assert [run.id for run in claimed] == expected
        assert {(run.status, run.worker_id) for run in claimed} <= {(RunStatus.RUNNING, worker)}
        for run_id in batch:
            self.model[run_id] = (RunStatus.COMPLETED, worker)
        for run_id in expected:
            self.model[run_id] = (RunStatus.RUNNING, worker)

    @rule(data=st.data())
    def cancel_under_its_worker(self, data: st.DataObject) -> None:
        running = self._of(RunStatus.RUNNING)
        if running:
            run_id = data.draw(st.sampled_from(running))
            cancel_run(self.db, run_id)
            self.model[run_id] = (RunStatus.CANCELLED, self.model[run_id][1])

    @invariant()
    def every_run_is_where_the_model_says(self) -> None:
        with self.db.engine.connect() as connection:
            rows = connection.execute(select(RUNS.c.id, RUNS.c.status, RUNS.c.worker_id)).all()
        assert {row.id: (row.status, row.worker_id) for row in rows} == self.model


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_hand_offs_never_claim_twice_lose_or_half_apply(backend: str, tmp_path: Path) -> None:
    db = connect(backend, tmp_path)
    db.create_tables()

    class Machine(HandOffMachine):
        pass

    Machine.db = db
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=200 if THOROUGH else 15,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        _empty_tables(db)
        db.close()
