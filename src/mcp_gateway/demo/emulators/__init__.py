"""Contract-faithful HTTP doubles of third-party services, for tests and the quickstart demo only.

Each emulator is a Starlette app that speaks the documented wire contract of one service (paths,
status codes, envelopes, error bodies, auth) over a small in-memory state machine. They are test and
demo doubles: they hold no real data, keep everything in memory and must never be deployed in front
of anything real. Run one with uvicorn (``uvicorn.run(emulator.app, ...)``) or in a thread with
``serve_in_thread``.

    dbt_cloud   dbt Cloud Administrative API v2 (jobs, runs, rerun from failure)
    dagster     Dagster webserver GraphQL (launchRun, launchRunReexecution, runOrError, runsOrError);
                its run model in ``dagster_runs``, its schema in ``dagster_schema``
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp


@dataclass
class RunningServer:
    """An ASGI app served by uvicorn in a daemon thread on 127.0.0.1."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait (bounded) for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


def serve_in_thread(
    app: ASGIApp, port: int, *, host: str = "127.0.0.1", timeout: float = 20.0
) -> RunningServer:
    """Serve ``app`` on ``host:port`` in a daemon thread and return once it accepts connections.

    Raises:
        RuntimeError: the server did not start within ``timeout`` seconds (e.g. the port is taken).
    """
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True, name=f"emulator-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"emulator did not start on {host}:{port}")
        time.sleep(0.01)  # bounded readiness poll, not a fixed wait
    return RunningServer(f"http://{host}:{port}", server, thread)
