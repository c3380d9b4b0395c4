"""Opening the policy history (``policy/history_store.py``) where the settings put the audit store."""

from __future__ import annotations

from pathlib import Path

from mcp_gateway.config import PostgresStore, Settings
from mcp_gateway.policy.history_store import SQLPolicyHistory, open_postgres_history, open_sqlite_history

HISTORY_FILE = Path("policy-history.db")
"""The SQLite policy history, in the data dir, when the audit store is SQLite."""


def open_policy_history(settings: Settings, *, read_only: bool = False) -> SQLPolicyHistory:
    """The policy history: in the audit store's PostgreSQL schema when the audit store is PostgreSQL
    (replicas then share one history), else ``policy-history.db`` in the data dir.

    Raises:
        StoreError: it cannot be opened (read-only: a PostgreSQL schema never set up).
    """
    store = settings.audit
    if isinstance(store, PostgresStore):
        return open_postgres_history(store.dsn, store.schema_name, create=not read_only)
    return open_sqlite_history(settings.data_path(HISTORY_FILE))
