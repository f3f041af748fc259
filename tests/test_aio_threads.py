"""The worker threads AsyncDatabase hands its SQLite and PostgreSQL calls to."""

import asyncio
import functools
import threading
import time

import pytest

from cosmos_models.aio.threads import WorkerThreads
from tests.test_aio import ticking_while


def test_a_call_runs_off_the_loop_thread_and_its_result_or_error_comes_back() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(2, "t")
        loop_thread = threading.get_ident()
        assert await threads.run(threading.get_ident) != loop_thread
        with pytest.raises(KeyError, match="missing"):
            await threads.run(lambda: dict[str, int]()["missing"])
        threads.shutdown()

    asyncio.run(scenario())


def test_one_caller_after_another_stays_on_the_warmest_thread() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(4, "t")
        # Four at once start four threads; the one that went idle last takes the next call.
        gate = threading.Barrier(4)
        await asyncio.gather(*(threads.run(lambda: gate.wait(5)) for _ in range(4)))
        seen = {await threads.run(threading.get_ident) for _ in range(20)}
        assert len(seen) == 1
        assert threads._started == 4
        threads.shutdown()

    asyncio.run(scenario())


def test_calls_beyond_the_limit_wait_their_turn_and_the_loop_keeps_running() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(2, "t")
        running = 0
        most = 0
        lock = threading.Lock()

        def call(index: int) -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            return index

        calls = asyncio.gather(*(threads.run(functools.partial(call, i)) for i in range(8)))
        results, ticks = await ticking_while(calls, 0.005)
        assert results == list(range(8))
        assert most == 2  # never more threads than asked for
        assert threads._started == 2
        assert ticks >= 5  # the waits did not block the loop
        threads.shutdown()

    asyncio.run(scenario())


def test_a_cancelled_call_that_had_not_started_never_runs() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(1, "t")
        release = threading.Event()
        ran: list[str] = []
        busy = asyncio.ensure_future(threads.run(lambda: release.wait(5)))
        queued = asyncio.ensure_future(threads.run(lambda: ran.append("queued")))
        await asyncio.sleep(0.01)  # both submitted: the second waits for the only thread
        queued.cancel()
        release.set()
        assert await busy is True
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await threads.run(lambda: "after") == "after"
        assert ran == []
        threads.shutdown()

    asyncio.run(scenario())


def test_a_cancelled_call_that_had_started_finishes_in_its_thread() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(1, "t")
        started = threading.Event()
        finished = threading.Event()

        def slow() -> None:
            started.set()
            time.sleep(0.05)
            finished.set()

        task = asyncio.ensure_future(threads.run(slow))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await threads.run(finished.is_set) is True  # same thread, after it
        threads.shutdown()

    asyncio.run(scenario())


def test_shutdown_stops_the_threads_and_refuses_new_calls() -> None:
    async def scenario() -> None:
        threads = WorkerThreads(3, "cosmos-test")
        await asyncio.gather(*(threads.run(lambda: time.sleep(0.01)) for _ in range(3)))
        threads.shutdown()
        threads.shutdown()  # idempotent
        with pytest.raises(RuntimeError, match="shutdown"):
            await threads.run(lambda: None)

    asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while any(t.name.startswith("cosmos-test") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "worker threads still alive after shutdown"
        time.sleep(0.01)


def test_a_result_for_a_closed_loop_is_dropped_and_the_thread_goes_on() -> None:
    threads = WorkerThreads(1, "t")
    release = threading.Event()

    pending: list[asyncio.Future[bool]] = []

    async def submit() -> None:
        pending.append(asyncio.ensure_future(threads.run(lambda: release.wait(5))))
        await asyncio.sleep(0.01)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(submit())
    pending[0].cancel()
    loop.run_until_complete(asyncio.sleep(0))  # the cancelled caller ends
    loop.close()  # its loop is gone before the call ends
    release.set()
    assert asyncio.run(threads.run(lambda: "still serving")) == "still serving"
    threads.shutdown()


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        WorkerThreads(0, "t")
