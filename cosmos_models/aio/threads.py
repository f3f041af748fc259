"""Worker threads for blocking calls, handed over with one queue put and woken with one callback.

``loop.run_in_executor`` over a ``ThreadPoolExecutor`` wraps every call in two futures and wakes
whichever of its idle threads the shared queue picks, so a caller going one call after another
hops between threads with cold caches. Here each idle thread waits on its own queue, the most
recently idle one takes the next call (warm), and its result reaches the event loop through one
``call_soon_threadsafe`` setting the caller's future (``bench/bench_async.py`` measured the
SQLite hand-off; see the README's Async section).
"""

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

R = TypeVar("R")

# What a worker's queue carries: the caller's loop, its future and the call (None: stop).
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


class WorkerThreads:
    """At most ``max_workers`` threads, started when first needed, running calls for asyncio.

    Calls beyond ``max_workers`` wait in order for a thread. A call whose caller was cancelled
    still finishes in its thread when it had started (a thread cannot be interrupted), and is
    skipped when it had not.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers: must be at least 1, got {max_workers}")
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[SimpleQueue[_Job | None]] = []  # a stack: the warmest thread on top
        self._waiting: deque[_Job] = deque()
        self._started = 0
        self._shut_down = False

    async def run(self, call: Callable[[], R]) -> R:
        """Await ``call()`` run in a worker thread; raise what it raises.

        Raises ``RuntimeError`` after ``shutdown()``.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        job: _Job = (loop, future, call)
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot run a call after shutdown")
            if self._idle:
                self._idle.pop().put(job)
            elif self._started < self._max_workers:
                self._started += 1
                inbox: SimpleQueue[_Job | None] = SimpleQueue()
                inbox.put(job)
                # Daemon: an idle thread must not keep the interpreter alive when an app
                # forgets close(); a write cut at exit is a transaction never committed.
                threading.Thread(
                    target=self._work,
                    args=(inbox,),
                    name=f"{self._name}-{self._started}",
                    daemon=True,
                ).start()
            else:
                self._waiting.append(job)
        return await future

    def _work(self, inbox: "SimpleQueue[_Job | None]") -> None:
        job = inbox.get()
        while job is not None:
            loop, future, call = job
            result: Any = None
            error: BaseException | None = None
            # A caller cancelled before its call started: nothing to run (a benign read of a
            # flag the loop thread sets; at worst the call runs and its result is dropped).
            if not future.cancelled():
                try:
                    result = call()
                except BaseException as exc:  # delivered to the caller, raised there
                    error = exc
            # Idle again before the caller resumes, so that its next call finds this (warm)
            # thread on top of the stack.
            with self._lock:
                following = self._waiting.popleft() if self._waiting else None
                idle = following is None and not self._shut_down
                if idle:
                    self._idle.append(inbox)
            _deliver_soon(loop, future, result, error)
            del job, loop, future, call, result, error  # not kept alive while this thread waits
            job = inbox.get() if idle else following

    def shutdown(self) -> None:
        """Stop the idle threads now and the busy ones after their call; idempotent."""
        with self._lock:
            self._shut_down = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)


def _deliver_soon(
    loop: asyncio.AbstractEventLoop,
    future: "asyncio.Future[Any]",
    result: Any,
    exc: BaseException | None,
) -> None:
    # A closed loop (RuntimeError) has nobody waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_deliver, future, result, exc)


def _deliver(future: "asyncio.Future[Any]", result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
