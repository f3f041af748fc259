"""Model-based test of prune and restore: random steps, kills included, nothing ever lost.

A hypothesis state machine creates prompts and runs, records progress (often identical events),
finishes runs, prunes (without archive, with one, killed after the archive write, killed in the
middle of it), expires old events of any run (event retention, with the same variants) and
restores into the same database or into a fresh one on another backend. After every step the
database and the archive must hold exactly the rows the model says, compared by content identity
(``archive.identity_of``, repeats counted): every row ever written is in one of them unless a
prune without archive deleted it, and none is doubled. Context rows (runs and prompts archived
with their expired events, see ``archive``) are not rows of the archive in that sense: they
recreate a run or prompt only where it is missing.
"""

import itertools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, update

from cosmos_models import DatabaseConnection, Progress, RunStatus
from cosmos_models.db.tables import PROGRESS, RUNS, TABLES
from cosmos_models.services import maintenance
from cosmos_models.services import restore as restore_module
from cosmos_models.services.archive import ScanResult, TruncatedArchiveError, scan
from cosmos_models.services.archive_keys import Key, identity_of, is_context
from tests.conftest import _empty_tables, connect
from tests.factories import T0, make_prompt, make_run

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
NOW = T0 + timedelta(days=10)
BATCH = 2  # small, so that prunes take several batches and a kill lands mid-prune


class Killed(Exception):
    """The simulated crash of a prune."""


@dataclass
class ModelRow:
    """One row ever written, and where the model says it is."""

    table: str
    identity: Key
    run_id: str | None
    in_db: bool = True
    in_archive: bool = False
    timestamp: datetime | None = None  # of an event: event retention chooses by it


def archive_contents(path: Path, *, context: bool = False) -> Counter[Key]:
    """Identities in the complete members of an archive (a truncated tail does not count): of
    its rows, or with ``context`` of its context rows."""
    found: Counter[Key] = Counter()
    if not path.exists():
        return found
    held: list[Key] = []
    with path.open("rb") as handle:
        for line in scan(path, handle, ScanResult()):
            if line.record is None:
                found.update(held)
                held.clear()
            elif is_context(line.record) == context:
                held.append(identity_of(line.record["table"], line.record["row"]))
    return found


def database_contents(db: DatabaseConnection) -> Counter[Key]:
    found: Counter[Key] = Counter()
    with db.engine.connect() as connection:
        for name, table in TABLES.items():
            for row in connection.execute(select(table)):
                found[identity_of(name, dict(row._mapping))] += 1
    return found


Latest = tuple[int, float | None, datetime | None]


def summary_problems(db: DatabaseConnection, latest: dict[str, Latest] | None = None) -> list[str]:
    """Runs whose progress summary disagrees with their stored events (after restores too).

    Event retention deletes old events, the latest one included, and keeps the summary: so the
    stored seqs are unique and at most ``latest_seq`` (not 1..N), the count is of the events
    stored, the summary names the newest stored event only while that event is the latest, and
    (given the model's ``latest``: seq, percentage, timestamp of each run's last event written)
    the latest fields are those of the last event written, stored or not.
    """
    problems = []
    with db.engine.connect() as connection:
        events: dict[str, list[Any]] = {}
        for row in connection.execute(select(PROGRESS)):
            events.setdefault(row.run_id, []).append(row)
        for run in connection.execute(select(RUNS)):
            mine = events.get(run.id, [])
            seqs = sorted(row.seq for row in mine)
            newest = max(mine, key=lambda row: row.seq, default=None)
            if run.progress_count != len(mine):
                problems.append(f"{run.id}: count {run.progress_count} != {len(mine)}")
            if len(set(seqs)) != len(seqs) or (seqs and seqs[-1] > run.latest_seq):
                problems.append(f"{run.id}: seqs {seqs} beyond latest {run.latest_seq}")
            if (
                newest is not None
                and newest.seq == run.latest_seq
                and (run.latest_progress_id, run.latest_percentage, run.latest_at)
                != (newest.id, newest.percentage, newest.timestamp)
            ):
                problems.append(f"{run.id}: latest {run.latest_seq} is not event {newest.seq}")
            if latest is not None and run.id in latest:
                shown = (run.latest_seq, run.latest_percentage, run.latest_at)
                if shown != latest[run.id]:
                    problems.append(f"{run.id}: latest {shown} is not {latest[run.id]}")
    return problems


def table_counts(contents: Counter[Key]) -> dict[str, int]:
    totals = dict.fromkeys(TABLES, 0)
    for key, count in contents.items():
        totals[key[0]] += count
    return totals


class PruneRestoreMachine(RuleBasedStateMachine):
    """The steps; ``db``, ``fresh_db`` and ``directory`` are set by ``machine_for``."""

    db: DatabaseConnection
    fresh_db: Callable[[], DatabaseConnection]
    directory: Path

    def __init__(self) -> None:
        super().__init__()
        _empty_tables(self.db)
        self.archive = self.directory / f"archive_{next(_counter)}.jsonl.gz"
        self.rows: list[ModelRow] = []
        self.prompts: list[str] = []
        self.runs: dict[str, bool] = {}  # run id -> final
        self.truncated = False
        self.names = itertools.count()
        self.latest: dict[str, Latest] = {}  # run id -> its last event written (seq, %, time)

    # -- what the model expects ------------------------------------------------------------

    def expected(self, where: str) -> Counter[Key]:
        return Counter(row.identity for row in self.rows if getattr(row, where))

    def runs_in_db(self) -> list[str]:
        return sorted(row.identity[1] for row in self.rows if row.table == "runs" and row.in_db)

    def final_runs_in_db(self) -> list[str]:
        return [run_id for run_id in self.runs_in_db() if self.runs[run_id]]

    def archive_batch(self, run_ids: list[str]) -> None:
        """What appending one batch does: rows not archived yet (counted) become archived."""
        chosen = set(run_ids)
        prompt_of = {
            row.identity[1]: row.run_id for row in self.rows if row.table == "runs"
        }  # run rows carry their prompt id in run_id
        for row in self.rows:
            if row.table == "prompts" and row.identity[1] in {prompt_of[r] for r in chosen}:
                row.in_archive = True
            if row.table == "runs" and row.identity[1] in chosen:
                row.in_archive = True
        progress = [r for r in self.rows if r.table == "progress" and r.run_id in chosen]
        in_db = Counter(r.identity for r in progress if r.in_db)
        archived = Counter(r.identity for r in progress if r.in_archive)
        for identity, count in in_db.items():
            fresh = max(0, count - archived[identity])
            for row in progress:
                if fresh and row.identity == identity and row.in_db and not row.in_archive:
                    row.in_archive = True
                    fresh -= 1

    def delete_batch(self, run_ids: list[str]) -> None:
        for row in self.rows:
            if row.table == "runs" and row.identity[1] in run_ids:
                row.in_db = False
            if row.table == "progress" and row.run_id in run_ids:
                row.in_db = False

    # -- steps -----------------------------------------------------------------------------

    @rule(new_prompt=st.booleans())
    def create_run(self, new_prompt: bool) -> None:
        with self.db.get_session() as session:
            if new_prompt or not self.prompts:
                prompt = make_prompt(id=f"ps_{next(self.names):05d}", created_at=T0)
                session.add(prompt)
                self.prompts.append(prompt.id)
                self.rows.append(ModelRow("prompts", ("prompts", prompt.id), None))
            prompt_id = self.prompts[-1]
            run = make_run(
                make_prompt(id=prompt_id), id=f"rs_{next(self.names):05d}", created_at=T0
            )
            session.add(run)
        self.runs[run.id] = False
        self.rows.append(ModelRow("runs", ("runs", run.id), prompt_id))

    @precondition(lambda self: bool(self.runs_in_db()))
    @rule(data=st.data(), percentage=st.sampled_from([0.0, 50.0]), late=st.booleans())
    def record_progress(self, data: st.DataObject, percentage: float, late: bool) -> None:
        run_id = data.draw(st.sampled_from(self.runs_in_db()))
        values: dict[str, Any] = {
            "run_id": run_id,
            "stage": "inference",
            "percentage": percentage,
            "message": "step",
            "timestamp": T0 + timedelta(seconds=int(late)),
        }
        event = Progress(**values)
        with self.db.get_session() as session:
            session.add(event)
        values["seq"] = event.seq  # numbered by the writer: (run_id, seq) is the event's identity
        self.rows.append(
            ModelRow(
                "progress", identity_of("progress", values), run_id, timestamp=values["timestamp"]
            )
        )
        self.latest[run_id] = (event.seq, percentage, values["timestamp"])

    @precondition(lambda self: any(not self.runs[r] for r in self.runs_in_db()))
    @rule(data=st.data())
    def finish_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from([r for r in self.runs_in_db() if not self.runs[r]]))
        with self.db.engine.begin() as connection:
            connection.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id)
                .values(status=RunStatus.COMPLETED, completed_at=T0, updated_at=T0)
            )
        self.runs[run_id] = True

    def _prune(self, archive: Path | None) -> maintenance.PruneResult:
        return maintenance.prune(
            self.db, older_than=timedelta(days=1), archive_path=archive, batch_size=BATCH, now=NOW
        )

    @rule()
    def prune_without_archive(self) -> None:
        final = self.final_runs_in_db()
        assert self._prune(None).runs == len(final)
        self.delete_batch(final)

    @rule()
    def prune_with_archive(self) -> None:
        final = self.final_runs_in_db()
        result = self._prune(self.archive)
        assert result.runs == len(final)
        for start in range(0, len(final), BATCH):
            self.archive_batch(final[start : start + BATCH])
        self.delete_batch(final)
        self.truncated = False  # opening the archive cut off any truncated tail

    @rule(mid_write=st.booleans())
    def prune_killed(self, mid_write: bool) -> None:
        """A crash after the archive write (rows in both places) or in the middle of it."""
        first_batch = self.final_runs_in_db()[:BATCH]
        original = maintenance.Archive.append
        wrote: list[int] = []

        def crashing(archive: maintenance.Archive, records: Any) -> int:
            wrote.append(original(archive, records))
            if mid_write and wrote[-1]:
                with archive.path.open("r+b") as handle:
                    handle.truncate(archive.path.stat().st_size - 5)
            raise Killed

        with mock.patch.object(maintenance.Archive, "append", crashing):
            if not first_batch:
                assert self._prune(self.archive).runs == 0
                self.truncated = False
                return
            with pytest.raises(Killed):
                self._prune(self.archive)
        if mid_write:
            # Opening the archive cut off an older truncated tail; this kill may leave a new one.
            self.truncated = bool(wrote and wrote[-1])
        else:
            self.archive_batch(first_batch)
            self.truncated = False

    def expired_in_db(self, cutoff: datetime) -> list[ModelRow]:
        return [
            row
            for row in self.rows
            if row.table == "progress" and row.in_db and row.timestamp is not None
            if row.timestamp < cutoff
        ]

    @rule(
        archived=st.booleans(),
        kill=st.sampled_from([None, "after_write", "mid_write"]),
        all_events=st.booleans(),
    )
    def expire_old_events(self, archived: bool, kill: str | None, all_events: bool) -> None:
        """Event retention: events older than the cutoff go, of any run; runs stay.

        The model's events are at T0 or T0 + 1 s: the cutoff takes the first or both.
        """
        age = timedelta(days=10) - timedelta(seconds=2 if all_events else 0.5)
        cutoff = NOW - age
        expired = self.expired_in_db(cutoff)
        archive = self.archive if archived or kill else None
        if kill is None:
            result = maintenance.prune(
                self.db, progress_older_than=age, archive_path=archive, batch_size=BATCH, now=NOW
            )
            assert (result.runs, result.expired_progress) == (0, len(expired))
            for row in expired:
                row.in_archive = row.in_archive or archive is not None
                row.in_db = False
            if archive is not None:
                self.truncated = False
            return
        # The first batch, as prune chooses it (by event id): killed in or after its write.
        with self.db.engine.connect() as connection:
            first = {
                (run_id, seq)
                for run_id, seq in connection.execute(
                    select(PROGRESS.c.run_id, PROGRESS.c.seq)
                    .where(PROGRESS.c.timestamp < cutoff)
                    .order_by(PROGRESS.c.id)
                    .limit(BATCH)
                )
            }
        original = maintenance.Archive.append
        wrote: list[int] = []

        def crashing(opened: maintenance.Archive, records: Any) -> int:
            wrote.append(original(opened, records))
            if kill == "mid_write" and wrote[-1]:
                with opened.path.open("r+b") as handle:
                    handle.truncate(opened.path.stat().st_size - 5)
            raise Killed

        with mock.patch.object(maintenance.Archive, "append", crashing):
            if not first:
                prune = maintenance.prune(
                    self.db, progress_older_than=age, archive_path=archive, now=NOW
                )
                assert prune.expired_progress == 0
                self.truncated = False
                return
            with pytest.raises(Killed):
                maintenance.prune(
                    self.db,
                    progress_older_than=age,
                    archive_path=archive,
                    batch_size=BATCH,
                    now=NOW,
                )
        if kill == "mid_write":
            self.truncated = bool(wrote and wrote[-1])
            return
        self.truncated = False
        for row in expired:
            if (row.identity[1], row.identity[2]) in first:
                row.in_archive = True

    def recreate_from_context(self) -> int:
        """Runs the archive holds only as context, missing here: restore recreates them."""
        recreated = 0
        context = archive_contents(self.archive, context=True)
        for row in self.rows:
            missing = not row.in_db and not row.in_archive
            if row.table == "runs" and row.identity in context and missing:
                row.in_db = True
                recreated += 1
        return recreated

    @rule()
    def restore_into_the_same_database(self) -> None:
        if not self.archive.exists():
            with pytest.raises(FileNotFoundError):
                restore_module.restore(self.db, self.archive)
            return
        if self.truncated:
            with pytest.raises(TruncatedArchiveError):
                restore_module.restore(self.db, self.archive)
            return
        before = self.expected("in_db")
        result = restore_module.restore(self.db, self.archive, batch_size=3)
        assert result.context == self.recreate_from_context()
        in_archive = [row for row in self.rows if row.in_archive]
        missing = Counter(r.identity for r in in_archive) - before
        for row in in_archive:
            if not row.in_db and missing[row.identity]:
                row.in_db = True
                missing[row.identity] -= 1
        assert result.restored == table_counts(self.expected("in_db") - before)
        assert result.already_present == sum(self.expected("in_archive").values()) - (
            sum(result.restored.values()) - result.context
        )
        self.resync_recreated_runs()

    def resync_recreated_runs(self) -> None:
        """A run recreated from context is the snapshot archived with its events: whatever was
        written to it after that (its status, its later events, lost in a prune without archive)
        is not there, so the model takes the snapshot's status and summary."""
        with self.db.engine.connect() as connection:
            for run_id, status, seq, percentage, moment in connection.execute(
                select(
                    RUNS.c.id,
                    RUNS.c.status,
                    RUNS.c.latest_seq,
                    RUNS.c.latest_percentage,
                    RUNS.c.latest_at,
                )
            ):
                if self.runs[run_id] and not RunStatus(status).is_final:
                    self.runs[run_id] = False
                if seq < self.latest.get(run_id, (0, None, None))[0]:
                    self.latest[run_id] = (seq, percentage, moment)

    @precondition(lambda self: self.archive.exists() and not self.truncated)
    @rule()
    def restore_into_a_fresh_database(self) -> None:
        fresh = self.fresh_db()
        try:
            result = restore_module.restore(fresh, self.archive)
            archived = archive_contents(self.archive)
            # A context row recreates its run or prompt where the archive holds no row of it.
            context = Counter(set(archive_contents(self.archive, context=True)) - set(archived))
            assert database_contents(fresh) == archived + context
            assert summary_problems(fresh) == []
            assert result.restored == table_counts(archived + context)
            assert result.context == sum(context.values())
            again = restore_module.restore(fresh, self.archive)
            assert sum(again.restored.values()) == again.context == 0
            assert again.already_present == sum(archived.values())
        finally:
            _empty_tables(fresh)
            fresh.close()

    # -- after every step ------------------------------------------------------------------

    @invariant()
    def database_and_archive_hold_every_row_once(self) -> None:
        assert database_contents(self.db) == self.expected("in_db")
        # The model drops a row from both only in prune_without_archive, so these two
        # equalities are "database + archive = every row ever written, none doubled".
        assert archive_contents(self.archive) == self.expected("in_archive")

    @invariant()
    def run_summaries_match_their_events(self) -> None:
        assert summary_problems(self.db, self.latest) == []


_counter = itertools.count()


def other_backend(backend: str) -> str:
    """Restore into another backend: SQLite archives go to a server, server ones to SQLite."""
    return "mariadb" if backend == "sqlite-file" else "sqlite-file"


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite-file",
        "postgresql",
        "mariadb",
        pytest.param("sqlite-file", marks=pytest.mark.reliability, id="thorough-sqlite-file"),
        pytest.param("postgresql", marks=pytest.mark.reliability, id="thorough-postgresql"),
        pytest.param("mariadb", marks=pytest.mark.reliability, id="thorough-mariadb"),
    ],
)
def test_prune_and_restore_never_lose_or_double_a_row(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    thorough = "thorough" in request.node.callspec.id
    (tmp_path / "primary").mkdir()
    primary = connect(backend, tmp_path / "primary")
    primary.create_tables()
    second = other_backend(backend)

    def fresh_db() -> DatabaseConnection:
        directory = tmp_path / f"fresh_{next(_counter)}"
        directory.mkdir()
        connection = connect(second, directory)
        connection.create_tables()
        _empty_tables(connection)
        return connection

    class Machine(PruneRestoreMachine):
        pass

    Machine.db = primary
    Machine.fresh_db = staticmethod(fresh_db)  # type: ignore[assignment]
    Machine.directory = tmp_path
    # The plain variants run in every `make test`; the reliability ones are what
    # `make reliability` (thorough profile) runs hard, and nearly nothing otherwise.
    examples = (200 if THOROUGH else 2) if thorough else 10
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        _empty_tables(primary)
        primary.close()
