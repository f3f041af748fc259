"""Following progress as it commits: events pushed to a dashboard, per run in seq order.

A follower keeps a cursor ``{run_id: last seq delivered}`` and reads a run's events only when its
summary (``runs.latest_seq``) has moved past the cursor; seqs are gapless and in commit order per
run, so reading ``seq > cursor`` never skips an event that commits later. How a follower learns
that something moved depends on the backend:

* PostgreSQL: ``LISTEN cosmos_progress`` on a connection of its own; writers ``pg_notify`` the run
  id inside their transaction, which PostgreSQL delivers at commit. A safety read every
  ``poll_interval`` (default 1 s) covers a notification lost with a dropped connection, which is
  re-opened with backoff.
* SQLite file: ``PRAGMA data_version`` on a connection of its own changes when another connection
  commits; checking it costs microseconds, so it is polled often (default every 20 ms) and the
  events are read only when it changed. SQLite in memory has one connection: plain polling.
* MariaDB: the summary is polled (default every 250 ms); only runs whose ``latest_seq`` moved are
  read.
"""

import sqlite3
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy import select

from cosmos_models.db.connection import DatabaseConnection
from cosmos_models.db.tables import PROGRESS, RUNS
from cosmos_models.errors import DatabaseError
from cosmos_models.models.checks import check_seconds, check_seq_map, check_str_iterable
from cosmos_models.models.progress import ProgressRead
from cosmos_models.models.readmodels import progress_read
from cosmos_models.services.common import MAX_PAGE, NOTIFY_CHANNEL, check_connection

T = TypeVar("T")

DEFAULT_POLL_INTERVAL: Final = {"postgresql": 1.0, "sqlite": 0.02, "mysql": 0.25}
# Reads that fail (a server restarting) are retried with backoff this many times, then raised.
READ_RETRIES: Final = 12
MAX_BACKOFF: Final = 2.0


class _Waiter(Protocol):
    def wait(self, seconds: float) -> set[str] | None:
        """Return when something may have changed or ``seconds`` passed: the runs known to
        have new events, or None when every followed run must be checked."""

    def close(self) -> None:
        """Release the waiter's own connection."""


class _PollWaiter:
    """No signal to wait for: sleep, then check every followed run."""

    def wait(self, seconds: float) -> set[str] | None:
        time.sleep(seconds)
        return None

    def close(self) -> None:
        return None


class SQLiteWaiter:
    """Waits for ``PRAGMA data_version`` to change: another connection committed.

    ``changed()`` is the check (microseconds; the async side runs it in a thread); ``wait`` is
    the sync side's loop around it.
    """

    def __init__(self, database: str, interval: float) -> None:
        self.interval = interval
        uri = database.startswith("file:")
        self.connection = sqlite3.connect(database, uri=uri, check_same_thread=False)
        self.version = self._version()

    def _version(self) -> int:
        return int(self.connection.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """True once another connection committed since the last check that said so."""
        version = self._version()
        if version == self.version:
            return False
        self.version = version
        return True

    def wait(self, seconds: float) -> set[str] | None:
        deadline = time.monotonic() + seconds
        while not self.changed():
            left = deadline - time.monotonic()
            if left <= 0:
                return set()
            time.sleep(min(self.interval, left))
        return None

    def close(self) -> None:
        self.connection.close()


def backoff_delays(deadline: float | None = None) -> Iterator[float]:
    """The pauses between attempts to reach a database that is away: 50 ms, doubling up to
    ``MAX_BACKOFF``; ``READ_RETRIES`` of them, or as many as fit before ``deadline``
    (``time.monotonic()``)."""
    delay, attempt = 0.05, 0
    while True:
        if deadline is None:
            if attempt >= READ_RETRIES:
                return
            pause = delay
        else:
            pause = min(delay, deadline - time.monotonic())
            if pause <= 0:
                return
        yield pause
        attempt, delay = attempt + 1, min(delay * 2, MAX_BACKOFF)


class _PostgresWaiter:
    """``LISTEN`` on a connection of its own; re-opened with backoff when it drops."""

    def __init__(self, db: DatabaseConnection) -> None:
        self.db = db
        self.raw: Any = None
        self._connect()

    def _connect(self) -> None:
        raw = self.db.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            driver.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except BaseException:
            raw.invalidate()
            raise
        self.raw = raw

    def _drop(self) -> None:
        if self.raw is not None:
            self.raw.invalidate()  # never back to the pool: it is LISTENing
            self.raw = None

    def wait(self, seconds: float) -> set[str] | None:
        if self.raw is None:
            for pause in backoff_delays(time.monotonic() + seconds):
                try:
                    self._connect()
                    break
                except Exception:  # the server is away: try again until the deadline
                    time.sleep(pause)
            return None  # back (notifications may have been missed) or not: check every run
        driver = self.raw.driver_connection
        try:
            woken = {n.payload for n in driver.notifies(timeout=seconds, stop_after=1)}
            if not woken:
                return None  # the safety read
            woken.update(n.payload for n in driver.notifies(timeout=0, stop_after=1000))
        except Exception:  # psycopg.OperationalError and kin: the connection is gone
            self._drop()
            return None
        return woken

    def close(self) -> None:
        self._drop()


def _waiter(db: DatabaseConnection, interval: float) -> _Waiter:
    dialect = db.engine.dialect.name
    if dialect == "postgresql":
        return _PostgresWaiter(db)
    if dialect == "sqlite" and not db.is_memory:
        return SQLiteWaiter(db.url.database or "", interval)
    return _PollWaiter()


class FollowState:
    """One follower's reading side, shared by the sync generator and ``cosmos_models.aio``:
    what it follows, its cursor, and how long to wait next. Only the waiting differs by side."""

    def __init__(
        self,
        db: DatabaseConnection,
        run_ids: Collection[str] | None,
        after: Mapping[str, int] | None,
        poll_interval: float | None,
        idle_timeout: float | None,
    ) -> None:
        check_connection(db)
        self.db = db
        self.wanted = None if run_ids is None else frozenset(check_str_iterable(run_ids, "run_ids"))
        self.cursor = {} if after is None else check_seq_map(after, "after")
        self.from_now = after is None
        check_seconds(poll_interval, "poll_interval", allow_zero=False)
        self.idle_timeout = check_seconds(idle_timeout, "idle_timeout", allow_zero=True)
        self.interval = poll_interval or DEFAULT_POLL_INTERVAL.get(db.engine.dialect.name, 0.25)
        self.hint: set[str] | None = None
        self.more = self.delivered = False
        self.idle_since = time.monotonic()

    def start(self) -> None:
        """Once listening: take the stored events as seen when following from now (an event
        committed from here on is either counted in this snapshot or read after it)."""
        if self.from_now:
            self.cursor.update(_latest_seqs(self.db, self.wanted))
        self.idle_since = time.monotonic()

    def read(self) -> list[ProgressRead]:
        """The next events to deliver (the cursor moves past them)."""
        events, self.more = _read_new(self.db, self.wanted, self.cursor, self.hint)
        for event in events:
            self.cursor[event.run_id] = event.seq
        self.delivered = bool(events)
        return events

    def next_wait(self) -> float | None:
        """After the events were delivered: seconds to wait (0: read again at once), or None
        when the follower has been idle for ``idle_timeout``."""
        now = time.monotonic()
        if self.delivered:
            self.idle_since = now
        if self.more:
            self.hint = None
            return 0.0
        if self.idle_timeout is None:
            return self.interval
        left = self.idle_timeout - (now - self.idle_since)
        return None if left <= 0 else min(self.interval, left)


def follow_progress(
    db: DatabaseConnection,
    run_ids: Collection[str] | None = None,
    *,
    after: Mapping[str, int] | None = None,
    poll_interval: float | None = None,
    idle_timeout: float | None = None,
) -> Generator[ProgressRead, None, None]:
    """Yield progress events as they commit, in seq order per run, until closed.

    ``run_ids``: the runs to follow (None: every run, runs created later included). ``after``:
    ``{run_id: last seq seen}`` to resume from, without a gap or a duplicate; runs missing from
    it are read from their first event. ``after=None`` starts from now: events already stored
    are skipped. ``poll_interval`` (seconds; default per backend, see the module) bounds the
    delay of the fallback checks; ``idle_timeout`` ends the iteration once no event arrived for
    that long (None: follow until the generator is closed). Closing the generator releases its
    connection. Raises ``ValueError`` naming a bad argument (at the call), ``DatabaseError`` if
    reads keep failing.
    """
    return _follow(FollowState(db, run_ids, after, poll_interval, idle_timeout))


def _follow(state: FollowState) -> Generator[ProgressRead, None, None]:
    waiter = _waiter(state.db, state.interval)
    try:
        _with_retries(state.start)
        while True:
            yield from _with_retries(state.read)
            seconds = state.next_wait()
            if seconds is None:
                return
            if seconds > 0:
                state.hint = waiter.wait(seconds)
    finally:
        waiter.close()


def _with_retries(read: Callable[[], T]) -> T:
    """Run a read, retrying with backoff while the database is away (a server restart)."""
    for pause in backoff_delays():
        try:
            return read()
        except DatabaseError:
            time.sleep(pause)
    return read()


def _latest_seqs(db: DatabaseConnection, wanted: Collection[str] | None) -> dict[str, int]:
    query = select(RUNS.c.id, RUNS.c.latest_seq).where(RUNS.c.latest_seq > 0)
    if wanted is not None:
        query = query.where(RUNS.c.id.in_(sorted(wanted)))
    with db.get_session(read_only=True) as session:
        return {run_id: int(seq) for run_id, seq in session.execute(query)}


def _read_new(
    db: DatabaseConnection,
    wanted: frozenset[str] | None,
    cursor: Mapping[str, int],
    hint: set[str] | None,
) -> tuple[list[ProgressRead], bool]:
    """Events past the cursor of the runs whose summary moved (only the hinted runs, if any),
    at most one page per run; the flag says whether a run has more to read right away."""
    if hint is not None and not hint:
        return [], False
    candidates: Collection[str] | None = wanted
    if hint is not None:
        candidates = hint if wanted is None else hint & wanted
    moved = sorted(
        (run_id, seq)
        for run_id, seq in _latest_seqs(db, candidates).items()
        if seq > cursor.get(run_id, 0)
    )
    events: list[ProgressRead] = []
    more = False
    if not moved:
        return events, more
    with db.get_session(read_only=True) as session:
        for run_id, latest in moved:
            rows = session.execute(
                select(PROGRESS)
                .where(PROGRESS.c.run_id == run_id, PROGRESS.c.seq > cursor.get(run_id, 0))
                .order_by(PROGRESS.c.seq)
                .limit(MAX_PAGE)
            ).all()
            events.extend(progress_read(row) for row in rows)
            more = more or (len(rows) == MAX_PAGE and rows[-1].seq < latest)
    return events, more
