"""What a stdio upstream's process needs beside its client: its stderr, read through the redactor."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TextIO

from mcp_gateway.redact import Redactor

logger = logging.getLogger(__name__)


def stderr_pipe(name: str, redactor: Callable[[], Redactor]) -> tuple[TextIO, threading.Thread]:
    """A pipe for the upstream's stderr; a daemon thread logs each line after redaction."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "r", encoding="utf-8", errors="replace")
    writer = os.fdopen(write_fd, "w", encoding="utf-8")

    def pump() -> None:
        with reader:
            for line in reader:
                logger.info("upstream %s stderr: %s", name, redactor().scrub_text(line.rstrip()))

    thread = threading.Thread(target=pump, name=f"upstream-{name}-stderr", daemon=True)
    thread.start()
    return writer, thread


def describe(exc: BaseException) -> str:
    """The innermost error of a task-group failure: the one that says what went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
