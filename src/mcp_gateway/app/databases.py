"""The PostgreSQL schemas a config uses, and their migrations (``mcp-gateway db``).

Each store on PostgreSQL migrates its own component when it opens (a gateway start migrates them
all); ``migrate_all`` does the same ahead of time, from the CLI, and ``schema_status`` only reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp_gateway.config import PostgresStore, Settings
from mcp_gateway.errors import StoreError
from mcp_gateway.storage.database import describe_pg_error
from mcp_gateway.storage.migrate import Migration, migrate, versions

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Component:
    """One store's tables in one PostgreSQL schema."""

    name: str
    dsn: str
    schema: str
    migrations: Sequence[Migration]

    @property
    def latest(self) -> int:
        return len(self.migrations)


def postgres_components(settings: Settings) -> list[Component]:
    """Every store ``settings`` puts on PostgreSQL, with its migrations (empty: all on SQLite)."""
    from mcp_gateway.approvals.sql import MIGRATIONS as APPROVALS
    from mcp_gateway.audit.postgres import MIGRATIONS as AUDIT
    from mcp_gateway.connectors.orchestrators.idempotency import MIGRATIONS as RERUN_KEYS
    from mcp_gateway.connectors.siem.cursor import MIGRATIONS as SIEM_CURSOR
    from mcp_gateway.console.sessions import MIGRATIONS as CONSOLE_SESSIONS
    from mcp_gateway.core.spent_states import MIGRATIONS as REQUEST_STATES
    from mcp_gateway.identity.agents import token_migrations
    from mcp_gateway.incidents.store import MIGRATIONS as INCIDENTS
    from mcp_gateway.pins.store import MIGRATIONS as PINS
    from mcp_gateway.vault.store import MIGRATIONS as VAULT

    found: list[Component] = []
    if isinstance(settings.audit, PostgresStore):
        found.append(Component("audit", settings.audit.dsn, settings.audit.schema_name, AUDIT))
    if isinstance(settings.vault.store, PostgresStore):
        found.append(Component("vault", settings.vault.store.dsn, settings.vault.store.schema_name, VAULT))
    approvals = settings.approvals
    if approvals.store == "postgres" and approvals.dsn is not None:
        found.append(Component("approvals", approvals.dsn, approvals.schema_name, APPROVALS))
    for name, store in (("agent_tokens", settings.agents), ("admin_tokens", settings.admins)):
        if isinstance(store, PostgresStore):
            found.append(Component(name, store.dsn, store.schema_name, token_migrations(name)))
    pinning = settings.pinning
    if pinning.backend == "postgres" and pinning.dsn is not None:
        found.append(Component("pins", pinning.dsn, pinning.schema_name, PINS))
    if settings.store is not None:
        found.append(Component("rerun_keys", settings.store.url, settings.store.schema_name, RERUN_KEYS))
        shared = (settings.store.url, settings.store.schema_name)
        found.append(Component("request_states", *shared, REQUEST_STATES))
        found.append(Component("incidents", *shared, INCIDENTS))
        found.append(Component("siem_cursor", *shared, SIEM_CURSOR))
        if settings.console.enabled:
            found.append(Component("console_sessions", *shared, CONSOLE_SESSIONS))
    return found


@contextmanager
def _connect(component: Component) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    import psycopg

    try:
        with psycopg.connect(component.dsn, autocommit=True, connect_timeout=5) as conn:
            yield conn
    except psycopg.Error as exc:
        why = describe_pg_error(exc, component.dsn)
        raise StoreError(f"{component.name} (postgres schema `{component.schema}`): {why}") from exc


def migrate_all(settings: Settings) -> list[tuple[Component, list[int]]]:
    """Bring every PostgreSQL store of ``settings`` up to date; returns each with the versions applied
    now (empty: it was up to date). Safe to run while gateways run and start (advisory lock).

    Raises:
        StoreError: a database cannot be reached, refused a migration, or is newer than this gateway.
    """
    done: list[tuple[Component, list[int]]] = []
    for component in postgres_components(settings):
        with _connect(component) as conn:
            done.append((component, migrate(conn, component.schema, component.name, component.migrations)))
    return done


def schema_status(settings: Settings) -> list[tuple[Component, int]]:
    """Each PostgreSQL store of ``settings`` with its applied version (0: never set up, or made before
    versioned migrations). Reads only: creates nothing.

    Raises:
        StoreError: a database cannot be reached.
    """
    found: list[tuple[Component, int]] = []
    for component in postgres_components(settings):
        with _connect(component) as conn:
            found.append((component, (versions(conn, component.schema) or {}).get(component.name, 0)))
    return found
