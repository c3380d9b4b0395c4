"""The audit log's writer thread: a sink's blocking append run off the event loop, cheaply.

``AuditLog`` hands a batch to this thread when it cannot commit on the loop (slow storage, a busy
store, or ``commit_on_loop`` off). ``anyio.to_thread.run_sync`` did that before, at about 50 µs of
CPU per hand-off (a capacity limiter, a cancel scope, a context copy, a ``queue.Queue`` whose
``put`` takes a Python condition); two hand-offs per call (intent and outcome) showed as a tenth of
the gateway's CPU in ``bench/profile_gateway.py``. Here a hand-off is a C ``SimpleQueue.put`` and a
``call_soon_threadsafe`` back, about 20 µs (uvloop, this machine).

One thread per log, started on first use and ended after ``IDLE_SECONDS`` without work (so a test
that opens many logs leaves no threads behind). The future ``run`` returns cannot be cancelled: what
it stands for is written anyway, so a task cancelled while awaiting it gets its cancellation only
once the result is in (the log's leader holds it until its callers are answered). That protects the
leader's wait for nothing, where an anyio shield costs about 30 calls per batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

IDLE_SECONDS = 10.0
"""A writer thread with nothing to do for this long ends; the next batch starts another."""

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Any], Any], Any]


class _Pending(asyncio.Future[Any]):
    """A result of the writer thread: refuses to be cancelled (see the module doc)."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class SinkWriter:
    """Runs ``func(arg)`` in one worker thread, in submission order; see the module doc."""

    def __init__(self, name: str = "audit writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards ``_running`` against a thread ending while work arrives
        self._running = False

    def run(self, func: Callable[[A], T], arg: A) -> asyncio.Future[T]:
        """A future of ``func(arg)`` run in the writer thread (its exception, if it raised); it
        cannot be cancelled (a task awaiting it is cancelled once it is done)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = _Pending(loop=loop)
        with self._lock:
            self._queue.put((loop, future, func, arg))
            if not self._running:
                self._running = True
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            try:
                loop, future, func, arg = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            error: BaseException | None = None
            result: Any = None
            try:
                result = func(arg)
            except BaseException as exc:  # handed to the awaiting caller, as to_thread does
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more
            del future, result, error
