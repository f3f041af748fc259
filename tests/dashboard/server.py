"""A real HTTP server and a real browser for the dashboard tests.

The server is uvicorn running the app in a thread of the test process (so it can share an
in-memory SQLite database with the test) on a free port of 127.0.0.1. The browser is Debian's
``chromium`` driven by Playwright; nothing is downloaded at test time (``playwright install``
is never run). Without the browser the tests are skipped on a laptop and fail in CI.
"""

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The system browser Playwright launches (``COSMOS_CHROMIUM`` overrides), or None."""
    wanted = os.environ.get("COSMOS_CHROMIUM")
    if wanted:
        return wanted if os.access(wanted, os.X_OK) else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread; yield its base URL; stop it (lifespan included)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
