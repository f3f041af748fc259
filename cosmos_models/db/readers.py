"""Connections kept aside for lean reads: one SELECT each, in autocommit, without a pool checkout.

A lean read (``cosmos_models.db.lean``) sends one SELECT and fetches all of it. Through the pool
it also paid the checkout and the return (queue locks, events, a weak reference, the reset's
ROLLBACK) and, on the servers, the driver's transaction: psycopg sends ``BEGIN`` before the
SELECT and the reset sends ``ROLLBACK``; PyMySQL sends every ROLLBACK to the server. That is
three round trips for one statement, and on SQLite the pool's work was as long as the query.

``Readers`` keeps up to ``KEEP`` connections opened by the engine's pool (so every ``connect``
listener ran: SQLite's pragmas, PostgreSQL's UTC time zone) and then detached from it, in
autocommit: one statement is then its own transaction, with the same snapshot a fresh
transaction would give (committed rows as of the statement), and one round trip. When all of
them are busy a read uses the pool as before, so threads never wait for a reader and the pool's
limits are never taken from (the readers are extra connections, at most ``KEEP``).

What the pool did for a connection is done here too: a server connection is checked before use
for a server-side close (``recovery.closed_by_server``, no round trip) and replaced after
``pool_recycle`` seconds; a connection that raised is closed, never reused; ``close()`` closes
them all; and a forked child leaves its parent's connections alone (closing one would end the
parent's session on the server).
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Engine

from cosmos_models.db.recovery import closed_by_server

KEEP: Final = 2
"""The most connections kept for lean reads by one database (beyond its pool)."""


Loan = tuple[Any, float]
"""A reader lent out: its driver connection, and when it was opened (``time.monotonic()``)."""


class Readers:
    """The lean reads' own connections of ``engine`` (see the module); thread-safe.

    ``acquire()`` lends a driver connection in autocommit or returns ``None`` (then use the
    pool); give it back with ``release()``, or ``discard()`` it after an error. ``recycle``:
    the pool's ``pool_recycle`` (seconds, -1 never), applied to server connections.
    """

    def __init__(self, engine: Engine, recycle: int, keep: int = KEEP) -> None:
        self._engine = engine
        # Async engines hand out greenlet adapters: their reads keep the pool's path.
        self._keep = 0 if engine.dialect.is_async else keep
        self._idle: list[Loan] = []
        self._count = 0  # opened and not yet closed, idle or lent
        self._lock = threading.Lock()  # for opening and closing only; lending is list.pop
        self._closed = False
        self._forks = _forks[0]
        self._server = engine.dialect.name != "sqlite"
        self._recycle = float("inf") if recycle < 0 else float(recycle)
        self._inherited: list[Loan] = []  # a parent process's connections, never touched
        # Called with the driver connection on the borrowing thread, as it is lent and before it
        # is given back (cosmos_models.aio.inline bounds reads on the event loop's thread).
        self.on_lend: Callable[[Any], None] | None = None
        self.on_return: Callable[[Any], None] | None = None

    def acquire(self) -> Loan | None:
        """A driver connection in autocommit, or ``None`` when all are lent (use the pool).

        Raises the driver's error when a new connection cannot be opened.
        """
        loan = self._acquire()
        if loan is not None and self.on_lend is not None:
            self.on_lend(loan[0])
        return loan

    def _acquire(self) -> Loan | None:
        if self._forks != _forks[0]:
            self._forked()
        while True:
            try:
                loan = self._idle.pop()
            except IndexError:
                return self._open()
            if not self._server:
                return loan
            connection, opened = loan
            if time.monotonic() - opened < self._recycle and not closed_by_server(connection):
                return loan
            self.discard(loan)  # the server left, or it is old: the next one

    def release(self, loan: Loan) -> None:
        """Give back a connection whose statement ran to the end (all rows fetched)."""
        if self.on_return is not None:
            self.on_return(loan[0])
        self._idle.append(loan)
        if self._closed:  # closed meanwhile: close() may have drained before this append
            self.close()

    def discard(self, loan: Loan) -> None:
        """Close a connection that raised or is no longer usable; it is not lent again."""
        with self._lock:
            self._count -= 1
        # Already broken, maybe: closing is only for the server's sake.
        with contextlib.suppress(Exception):
            loan[0].close()

    def close(self) -> None:
        """Close every idle connection; connections lent now are closed when given back."""
        self._closed = True
        while True:
            try:
                loan = self._idle.pop()
            except IndexError:
                return
            self.discard(loan)

    def _open(self) -> Loan | None:
        with self._lock:
            if self._closed or self._count >= self._keep:
                return None
            self._count += 1
        try:
            pooled = self._engine.raw_connection()  # connect listeners run on a new one
            connection: Any = pooled.dbapi_connection
            pooled.detach()  # the pool forgets it; its slot opens a new one when needed
            self._engine.dialect.set_isolation_level(connection, "AUTOCOMMIT")
        except BaseException:
            with self._lock:
                self._count -= 1
            raise
        return connection, time.monotonic()

    def _forked(self) -> None:
        # The parent's connections share their sockets with it: keep them from being closed or
        # garbage-collected (a driver's finalizer would end the parent's session), start anew.
        with self._lock:
            self._inherited.extend(self._idle)
            self._idle = []
            self._count = 0
            self._forks = _forks[0]


# How many forks led to this process: a child sees a count its readers were not opened under
# (an int compared per read; getpid() is a system call).
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)
