"""Short SQLite calls run on the event loop thread, and move to a thread when they would wait.

A SQLite call does no network I/O: a short one is CPU work, like encoding the response that
follows it. Handing it to a worker thread costs two cross-thread wake-ups (and, under the GIL,
two hand-overs of it), more than the call itself on a loaded or virtual machine
(``bench/bench_async.py``: 0.52-0.77x the sync throughput in threads). So on a SQLite database in
WAL mode the calls marked short in ``twins.py`` and asking for at most ``SMALL`` items first run
on the loop thread, where none of them may wait, until it has committed something:

* a write's connections have a zero busy timeout: a ``BEGIN IMMEDIATE`` meeting another
  connection's write lock fails at once, and the call runs again in a worker thread, which waits
  for the lock as the sync side does (WAL readers never wait for it);
* SQLite's progress handler stops a statement once the call has run ``BUDGET_S``, and the call
  runs again in a worker thread (at most ``BUDGET_S`` of work is thrown away);
* a pooled connection must be free at once, or the call goes to a thread.

A call that has committed never moves (it would be applied twice); anything else it raises is
its own error, raised as it is. WAL readers never wait for a writer; a database not in WAL mode
(read-only, ``sqlite_wal=False``) keeps every call in threads. Automatic WAL checkpoints (an
``fsync``) are off on these connections: ``Checkpoints`` runs them in a worker thread.
"""

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any, Final, TypeVar

from pydantic import BaseModel
from sqlalchemy import event

from cosmos_models.db.connection import DatabaseConnection

R = TypeVar("R")

BUDGET_S: Final = 0.002
"""How long a call may run SQL on the loop thread before it is interrupted and moved."""
SMALL: Final = 100
"""Calls with an int argument above this (a ``limit``) or a collection longer than this (ids)
run in a thread: building that many read models is Python work no budget can interrupt."""
WEIGHT: Final = 65_536
"""… and so do calls whose arguments hold more text than this (characters, plus one per item)."""
YIELD_EVERY_S: Final = 0.001
"""Inline calls one after another let the loop run its other tasks at least this often."""
CHECKPOINT_EVERY: Final = 256
"""Commits between two WAL checkpoints (SQLite's own: every 1,000 pages of WAL)."""
CHECKPOINT_WAIT_MS: Final = 200
"""How long a checkpoint waits for readers on an older snapshot before it gives up."""

# The progress handler runs every this many SQLite VM instructions (some microseconds each).
_PROGRESS_EVERY: Final = 1_000
_SQLITE_BUSY: Final = 5
_log = logging.getLogger(__name__)


class _Inline(threading.local):
    """The state of the inline call running on this thread (none on worker threads)."""

    deadline: float | None = None  # an inline call: interrupted past it, until it commits
    writing: bool = False  # it is a write
    committed: bool = False  # it has committed a transaction: it may no longer move
    interrupted: bool = False
    lent: tuple[Any, ...] = ()  # DBAPI connections with the progress handler
    relaxed: tuple[Any, ...] = ()  # … and those of them with a zero busy timeout
    yielded_at: float = 0.0  # when an inline call last let the loop run other tasks


_STATE: Final = _Inline()


def prepare_inline(db: DatabaseConnection, busy_timeout_ms: int) -> Callable[[], int]:
    """Install the hooks that bound inline calls on ``db``'s connections (pooled and lean).

    Returns a function giving the number of commits on ``db`` so far. The progress handler and
    the zero busy timeout are set only while the loop thread uses a connection: a handler left
    on a connection in a worker thread would take the GIL back every few microseconds of a long
    query that could otherwise run beside the loop.
    """
    restore = f"PRAGMA busy_timeout={int(busy_timeout_ms)}"
    engine = db.engine
    commits = [0]

    def lend(dbapi_connection: Any) -> None:
        state = _STATE
        if state.deadline is not None and not state.committed:
            dbapi_connection.set_progress_handler(_over_budget, _PROGRESS_EVERY)
            state.lent += (dbapi_connection,)
            if state.writing:  # WAL readers never wait for the lock
                dbapi_connection.execute("PRAGMA busy_timeout=0")
                state.relaxed += (dbapi_connection,)

    def give_back(dbapi_connection: Any) -> None:
        # On the thread that used it, before another thread can take it (None: invalidated).
        state = _STATE
        if dbapi_connection in state.lent:
            dbapi_connection.set_progress_handler(None, 0)
            state.lent = tuple(c for c in state.lent if c is not dbapi_connection)
        if dbapi_connection in state.relaxed:
            dbapi_connection.execute(restore)
            state.relaxed = tuple(c for c in state.relaxed if c is not dbapi_connection)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    db.readers.on_lend = lend
    db.readers.on_return = give_back
    event.listen(engine, "checkout", lambda dbapi_connection, _r, _p: lend(dbapi_connection))
    event.listen(engine, "checkin", lambda dbapi_connection, _r: give_back(dbapi_connection))

    # Fired before COMMIT is sent: from here on a write stays where it is, and its later
    # transactions may wait for the lock as any other (a read's sessions commit too: a read
    # may always move, its budget holds to its end).
    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        commits[0] += 1
        state = _STATE
        if state.deadline is not None and state.writing:
            state.committed = True
            give_back(connection.connection.dbapi_connection)

    return lambda: commits[0]


def _over_budget() -> int:
    state = _STATE
    deadline = state.deadline
    if deadline is None or state.committed or perf_counter() < deadline:
        return 0
    state.interrupted = True
    return 1  # SQLite stops the statement with SQLITE_INTERRUPT


def is_small(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call's arguments are small enough to run inline: no int above ``SMALL`` (a
    ``limit``), no collection of more than ``SMALL`` items, at most ``WEIGHT`` characters of
    text in all (a 20 MB document is copied and parsed outside SQLite's budget), and no one-shot
    iterator (a generator the inline attempt would use up before a move to a thread)."""
    left = WEIGHT
    stack: list[Any] = [*args, *kwargs.values()]
    while stack:
        value = stack.pop()
        left -= 1
        if left < 0:
            return False
        if value is None or isinstance(value, bool | float):
            continue
        if isinstance(value, int):
            if value > SMALL:
                return False
        elif isinstance(value, str | bytes):
            left -= len(value)
        elif isinstance(value, dict):
            if len(value) > SMALL:
                return False
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            if len(value) > SMALL:
                return False
            stack.extend(value)
        elif isinstance(value, BaseModel):
            stack.extend(value.__dict__.values())
        elif isinstance(value, Iterable):
            return False  # a generator, a view, a custom iterable: to a thread, untouched
    return left >= 0


def pool_capacity(db: DatabaseConnection) -> int | None:
    """How many connections ``db``'s pool lends at most (``None``: no limit)."""
    pool: Any = db.engine.pool
    overflow = getattr(pool, "_max_overflow", -1)
    return None if overflow < 0 else int(pool.size()) + overflow


def pool_has_room(db: DatabaseConnection) -> bool:
    """Whether the pool can lend a connection now (the loop thread must never wait for one)."""
    capacity = pool_capacity(db)
    pool: Any = db.engine.pool
    return capacity is None or pool.checkedout() < capacity


def attempt_inline(call: Callable[[], R], *, write: bool) -> tuple[bool, R | None]:
    """Run ``call()`` on this thread as the module docstring says (``write``: it may write).

    Returns ``(True, result)``; or ``(False, None)`` when the call must run again in a worker
    thread (it committed nothing). Raises what ``call`` raises otherwise.
    """
    state = _STATE
    state.interrupted = state.committed = False
    state.writing = write
    state.deadline = perf_counter() + BUDGET_S
    try:
        return True, call()
    except Exception as exc:
        if not state.committed and (state.interrupted or _sqlite_code(exc) == _SQLITE_BUSY):
            return False, None
        raise
    finally:
        state.deadline = None
        state.writing = False
        state.lent = state.relaxed = ()  # each was given back; a discarded one is closed


def should_yield() -> bool:
    """Whether inline calls have kept the loop for ``YIELD_EVERY_S`` since they last let the
    other tasks run (the caller then awaits ``asyncio.sleep(0)``, as real I/O would yield)."""
    now = perf_counter()
    if now - _STATE.yielded_at < YIELD_EVERY_S:
        return False
    _STATE.yielded_at = now
    return True


def _sqlite_code(exc: BaseException) -> int | None:
    """The primary result code of the ``sqlite3.Error`` behind ``exc`` (its cause chain)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, sqlite3.Error):  # 0 (SQLITE_OK): an error of the module's own
            return int(getattr(seen, "sqlite_errorcode", 0)) & 0xFF
        seen = seen.__cause__ or seen.__context__
    return None


class Checkpoints:
    """WAL checkpoints of ``db`` in a thread of their own, every ``CHECKPOINT_EVERY`` commits.

    ``prepare_inline`` turns SQLite's automatic checkpoint off on ``db``'s connections: it would
    run inside whichever commit crosses 1,000 WAL pages, on the loop thread for an inline write.
    The checkpoint is RESTART: a PASSIVE one beside writers that keep committing copies their
    frames but never lets the WAL start over, so the file grows without bound. RESTART takes
    the write lock for its duration (inline writes meeting it move to threads and wait) and
    waits for readers at most ``CHECKPOINT_WAIT_MS``; when it cannot finish, the next one tries.
    Its own thread, not a task: a task would be cancelled with the event loop that started it
    (one ``asyncio.run`` per job), and the checkpoint lost.
    """

    def __init__(self, db: DatabaseConnection, commits: Callable[[], int]) -> None:
        self._db = db
        self._commits = commits
        self._done_at = 0  # the commit count when the last checkpoint that finished began
        self._thread: threading.Thread | None = None

    def after_call(self) -> None:
        """After a call: start a checkpoint when one is due and none is running."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        if self._db._closed or self._commits() - self._done_at < CHECKPOINT_EVERY:
            return
        self._thread = threading.Thread(target=self._run, name="cosmos-db-checkpoint", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the checkpoint running now, if any (before closing)."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        if self._db._closed:  # a call that ended while close() ran
            return
        try:
            self._checkpoint()
        except Exception as exc:  # the next one will try again; the WAL only grows meanwhile
            _log.warning("WAL checkpoint of the SQLite database failed: %s", exc)

    def _checkpoint(self) -> None:
        began_at = self._commits()
        pooled = self._db.engine.raw_connection()
        try:
            connection: Any = pooled.dbapi_connection
            timeout = connection.execute("PRAGMA busy_timeout").fetchone()[0]
            connection.execute(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                busy = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            finally:
                connection.execute(f"PRAGMA busy_timeout={int(timeout)}")
        finally:
            pooled.close()
        if not busy:  # done: due again CHECKPOINT_EVERY commits after it began
            self._done_at = began_at
