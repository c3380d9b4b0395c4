"""A durable idempotency-key → run store, so the same rerun reason never launches twice.

The key is a hash of (job, mode, normalised reason). The toolset looks the key up before it asks the
orchestrator to launch and records the run the orchestrator answered with. The store is SQLite in the
gateway's data dir, so a restart does not forget what was launched. The key is also handed to the
orchestrator (Prefect ``idempotency_key``, Airflow ``dag_run_id``): a crash between launch and record
then still returns the first run instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rerun_keys (
    key TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    mode TEXT NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def normalise_reason(reason: str) -> str:
    """Case-folded, whitespace-collapsed reason: trivially different spellings are the same reason."""
    return " ".join(reason.split()).casefold()


def rerun_key(job: str, mode: str, reason: str) -> str:
    """The idempotency key of one rerun request (hex sha256 of job, mode and the normalised reason)."""
    payload = json.dumps([job, mode, normalise_reason(reason)], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LaunchRecord:
    """A launched rerun: which job, which mode, the run id the orchestrator answered with, and when."""

    key: str
    job: str
    mode: str
    run_id: str
    created_at: float


class IdempotencyStore:
    """SQLite-backed key → run store (thread-safe; one connection, serialised by a lock).

    Args:
        path: the database file (its parent is created).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(_SCHEMA)

    def get(self, key: str) -> LaunchRecord | None:
        """The record for ``key``, or None if that key never launched."""
        with self._lock:
            row = self._conn.execute(
                "SELECT key, job, mode, run_id, created_at FROM rerun_keys WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return LaunchRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]), float(row[4]))

    def record(self, key: str, job: str, mode: str, run_id: str) -> LaunchRecord:
        """Remember that ``key`` launched ``run_id``; a key already recorded keeps its first run."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO rerun_keys (key, job, mode, run_id, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, job, mode, run_id, time.time()),
            )
        found = self.get(key)
        assert found is not None  # noqa: S101 - the row was just inserted or already present
        return found

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
