"""Waiting for SQLite's write lock: short jittered retries instead of SQLite's own busy handler."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# A private generator: the module-level one is shared process state (and test tools watch it).
_JITTER = random.Random()  # noqa: S311 - retry jitter, not security


def when_free(action: Callable[[], T], timeout: float) -> T:
    """Run ``action``, retrying it while the database is locked, for at most ``timeout`` seconds.

    SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries, so a process that commits
    every millisecond starves another for seconds (and past the timeout: a refused call). Short
    jittered retries let writers take turns.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(_JITTER.uniform(0, 0.0005))


def try_begin(conn: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE`` once: False if another process holds the write lock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
            return False
        raise
    return True
