"""What a stdio upstream's process needs beside its client: its stderr, read through the redactor."""

from __future__ import annotations

import codecs
import logging
import os
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TextIO

from mcp_gateway.connectors.mcp.stderr_window import StderrWindow
from mcp_gateway.redact import Redactor

logger = logging.getLogger(__name__)

IDLE_SECONDS = 0.2
"""Held stderr is logged once the upstream has written nothing for this long..."""
MAX_DELAY_SECONDS = 2.0
"""... or once its oldest held line has waited this long."""
_READ_SIZE = 64 * 1024


def stderr_pipe(
    name: str,
    redactor: Callable[[], Redactor],
    *,
    idle_seconds: float = IDLE_SECONDS,
    max_delay_seconds: float = MAX_DELAY_SECONDS,
    tail: deque[str] | None = None,
) -> tuple[TextIO, threading.Thread]:
    """A pipe for the upstream's stderr; a daemon thread logs its lines, scrubbed in a window.

    The window (``stderr_window.py``) holds lines so that a secret split across them is scrubbed
    whole; what it holds is logged after ``idle_seconds`` of quiet, after ``max_delay_seconds`` at
    most, and at EOF (the upstream exited and the returned writer was closed). ``tail``, if given,
    receives each logged (scrubbed) line, so a failed start can say what the upstream last said.
    """
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    window = StderrWindow(redactor)

    def log(step: Callable[[], list[str]]) -> None:
        try:
            lines = step()
        except Exception:  # the redactor failed: drop the text rather than log it unscrubbed
            window.discard()
            logger.warning("upstream %s stderr: lines dropped, the redactor failed", name)
            return
        for line in lines:
            logger.info("upstream %s stderr: %s", name, line.rstrip())
            if tail is not None and line.strip():
                tail.append(line.strip())

    def pump() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held_since = 0.0
        # A selector, not select.select: that one fails on a descriptor above 1023.
        selector = selectors.DefaultSelector()
        selector.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                timeout = None
                if window.holding:
                    timeout = max(0.0, min(idle_seconds, held_since + max_delay_seconds - time.monotonic()))
                if not selector.select(timeout):
                    log(window.flush)
                    continue
                chunk = os.read(read_fd, _READ_SIZE)
                if not chunk:
                    log(partial(window.feed, decoder.decode(b"", final=True)))
                    log(window.flush)
                    return
                if not window.holding:
                    held_since = time.monotonic()
                log(partial(window.feed, decoder.decode(chunk)))
                if window.holding and time.monotonic() - held_since >= max_delay_seconds:
                    log(window.flush)  # a steady trickle: the oldest line has waited long enough
        finally:
            selector.close()
            os.close(read_fd)

    thread = threading.Thread(target=pump, name=f"upstream-{name}-stderr", daemon=True)
    thread.start()
    return writer, thread


def describe(exc: BaseException) -> str:
    """The innermost error of a task-group failure: the one that says what went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
