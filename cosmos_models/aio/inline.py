"""Short SQLite calls run on the event loop thread, and move to a thread when they would wait.

A SQLite call does no network I/O: a short one is CPU work, like encoding the response that
follows it. Handing it to a worker thread costs two cross-thread wake-ups (and, under the GIL,
two hand-overs of it), more than the call itself on a loaded or virtual machine
(``bench/bench_async.py``: 0.52-0.67x the sync throughput in threads). So on a SQLite database in
WAL mode the calls marked short in ``twins.py`` first run on the loop thread, where none of them
may *wait*:

* a read that runs longer than ``BUDGET_S`` is interrupted by SQLite's progress handler and, being
  idempotent, run again in a worker thread (at most ``BUDGET_S`` of work is thrown away);
* a write's first ``BEGIN IMMEDIATE`` runs with a zero busy timeout: when another connection holds
  the write lock it fails at once, before the call has written anything, and the call runs again
  in a worker thread, where it waits for the lock as the sync side does.

Anything else a call raises is its own error, raised as it is. WAL readers never wait for a
writer; a database not in WAL mode (read-only, ``sqlite_wal=False``) keeps every call in threads.
"""

import sqlite3
import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, TypeVar

from sqlalchemy import event

from cosmos_models.db.connection import DatabaseConnection

R = TypeVar("R")

BUDGET_S: Final = 0.002
"""How long a read may run on the loop thread before it is interrupted and moved to a thread."""

# The progress handler runs every this many SQLite VM instructions (some microseconds each).
_PROGRESS_EVERY: Final = 1_000
_SQLITE_BUSY: Final = 5


class _Inline(threading.local):
    """The state of the inline call running on this thread (none on worker threads)."""

    deadline: float | None = None  # an inline read: interrupted past it
    writing: bool = False  # an inline write
    committed: bool = False  # … that has committed a transaction: it may no longer move
    interrupted: bool = False
    relaxed: tuple[Any, ...] = ()  # DBAPI connections whose busy timeout is zero
    bounded: tuple[Any, ...] = ()  # DBAPI connections with the progress handler


_STATE: Final = _Inline()


def prepare_inline(db: DatabaseConnection, busy_timeout_ms: int) -> None:
    """Install the hooks that bound inline calls on ``db``'s connections (pooled and lean).

    A read's progress handler is set only while the loop thread uses the connection: set on a
    connection in a worker thread, it would take the GIL back every few microseconds of a long
    query that could otherwise run beside the loop.
    """
    restore = f"PRAGMA busy_timeout={int(busy_timeout_ms)}"
    engine = db.engine

    def lend(dbapi_connection: Any) -> None:
        state = _STATE
        if state.deadline is not None:
            dbapi_connection.set_progress_handler(_over_budget, _PROGRESS_EVERY)
            state.bounded += (dbapi_connection,)
        elif state.writing and not state.committed:
            # Until the write has committed anything, every connection it takes (a retry's
            # too) has a zero busy timeout: its BEGIN IMMEDIATE fails at once on a taken lock.
            dbapi_connection.execute("PRAGMA busy_timeout=0")
            state.relaxed += (dbapi_connection,)

    def give_back(dbapi_connection: Any) -> None:
        # On the thread that used it, before another thread can take it (None: invalidated).
        state = _STATE
        if dbapi_connection in state.bounded:
            dbapi_connection.set_progress_handler(None, 0)
            state.bounded = tuple(c for c in state.bounded if c is not dbapi_connection)
        if dbapi_connection in state.relaxed:
            dbapi_connection.execute(restore)
            state.relaxed = tuple(c for c in state.relaxed if c is not dbapi_connection)

    db.readers.on_lend = lend
    db.readers.on_return = give_back
    event.listen(engine, "checkout", lambda dbapi_connection, _r, _p: lend(dbapi_connection))
    event.listen(engine, "checkin", lambda dbapi_connection, _r: give_back(dbapi_connection))

    # A commit ends the call's chance to move; the timeout is back for its later transactions.
    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        if _STATE.writing:
            _STATE.committed = True
            give_back(connection.connection.dbapi_connection)


def _over_budget() -> int:
    deadline = _STATE.deadline
    if deadline is None or perf_counter() < deadline:
        return 0
    _STATE.interrupted = True
    return 1  # SQLite stops the statement with SQLITE_INTERRUPT


def attempt_inline(call: Callable[[], R], *, read: bool) -> tuple[bool, R | None]:
    """Run ``call()`` on this thread as the module docstring says.

    Returns ``(True, result)``; or ``(False, None)`` when the call must run again in a worker
    thread (nothing it did was kept). Raises what ``call`` raises otherwise.
    """
    state = _STATE
    state.interrupted = state.committed = False
    if read:
        state.deadline = perf_counter() + BUDGET_S
    else:
        state.writing = True
    try:
        return True, call()
    except Exception as exc:
        if read and (state.interrupted or _sqlite_code(exc) == _SQLITE_BUSY):
            return False, None
        # A write moves only when its first BEGIN found the lock taken: nothing written yet.
        if not read and not state.committed and _sqlite_code(exc) == _SQLITE_BUSY:
            return False, None
        raise
    finally:
        state.deadline = None
        state.writing = False
        state.relaxed = state.bounded = ()  # each was given back; a discarded one is closed


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
