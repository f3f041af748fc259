"""The real API app served by uvicorn in a thread, for tests over real HTTP (httpx)."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

WRITER = "rw-token-for-tests-0123456789abcdef"
READER = "ro-token-for-tests-0123456789abcdef"
TOKENS = f"rw:{WRITER},ro:{READER}"


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free local port; yield its base URL; stop it (lifespan shutdown too)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))

    def run() -> None:
        # uvicorn exits with SystemExit when the app's startup fails (the log says why).
        with contextlib.suppress(SystemExit):
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server did not start (see the log above)")
        if time.monotonic() > deadline:  # pragma: no cover - a hung startup
            raise TimeoutError("the API server did not start within 30 s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
