"""Log output and log redaction: every log record made in the process is scrubbed of vault values."""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
import weakref
from typing import Any, Protocol

from mcp_gateway.redact import Redactor


class RedactorHolder(Protocol):
    def current_redactor(self) -> Redactor: ...


_holders: weakref.WeakSet[Any] = weakref.WeakSet()
_reentry = threading.local()
_installed: list[bool] = []


def install_log_redaction(holder: RedactorHolder) -> None:
    """Scrub vault values from every log record made in this process, the libraries' included.

    Third-party code logs untrusted text too (the MCP SDK quotes an upstream's unparsable output in
    its validation errors), so redaction happens where records are made: the record factory formats
    the message and any traceback once, scrubs them, and stores the result.
    """
    _holders.add(holder)
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if getattr(_reentry, "active", False):
            return record
        _reentry.active = True
        try:
            _scrub_record(record, [h.current_redactor() for h in list(_holders)])
        finally:
            _reentry.active = False
        return record

    logging.setLogRecordFactory(factory)
    _installed.append(True)


def _scrub_record(record: logging.LogRecord, redactors: list[Redactor]) -> None:
    redactors = [r for r in redactors if not r.empty]
    if not redactors:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    exc_text = None
    if record.exc_info and record.exc_info[0] is not None:
        exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    stack = record.stack_info
    for redactor in redactors:
        message = redactor.scrub_text(message)
        exc_text = redactor.scrub_text(exc_text) if exc_text is not None else None
        stack = redactor.scrub_text(stack) if stack is not None else None
    record.msg, record.args = message, None
    if exc_text is not None:
        # Formatters use exc_text when it is set, so the raw exception is never formatted again.
        record.exc_text = exc_text
    record.stack_info = stack


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_ENV = "MCP_GATEWAY_LOG_LEVEL"
"""The operator's override: when set, it wins over ``telemetry.log_level``."""


def parse_level(text: str) -> int:
    """The ``logging`` level named ``text`` (any case).

    Raises:
        ValueError: not one of ``LEVELS`` (the message lists them).
    """
    name = text.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"`{text[:40]}` is not a log level: use one of {', '.join(LEVELS)}")
    return logging.getLevelName(name)  # type: ignore[no-any-return]


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr in a plain, greppable format.

    Raises:
        ValueError: ``level`` is not a log level.
    """
    logging.basicConfig(
        level=parse_level(level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _quiet_noisy()


def apply_config_level(level: str) -> bool:
    """Set the root level to ``telemetry.log_level`` unless ``MCP_GATEWAY_LOG_LEVEL`` is set (the
    environment wins). True if applied."""
    if os.environ.get(LEVEL_ENV):
        return False
    logging.getLogger().setLevel(parse_level(level))
    _quiet_noisy()
    return True


def _quiet_noisy() -> None:
    # pyiceberg announces its file IO choice at INFO on every table load; the HTTP clients log every
    # request line at INFO (URLs included).
    for noisy in ("pyiceberg", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
