"""Versioned migrations of the gateway's PostgreSQL schemas.

Each store that can live in PostgreSQL (a *component*: ``audit``, ``vault``, ``approvals``,
``agent_tokens``, ``admin_tokens``, ``pins``, ``rerun_keys``) owns a numbered list of ``Migration``s
next to its code. A ``schema_version`` table in each schema records, per component, every version
applied (``component, version, name, applied_at``).

``migrate`` applies what is missing, all of it in one transaction that first takes an advisory lock
keyed on the schema: replicas starting together apply each migration once, and the others wait and
then find nothing left to do. A component already at its newest version costs one read and takes no
lock. A schema whose component is at a version newer than this gateway knows is refused, never
downgraded or written.

Migration 1 of the audit, vault and approvals stores is exactly the tables the gateway created
before migrations existed, written ``IF NOT EXISTS``: a database made by that code has no
``schema_version`` yet, gets migration 1 recorded over its tables (nothing changes, no data moves),
then the later ones. Every migration 1 must stay that forgiving; later ones run only once per schema.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp_gateway.errors import StoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATION_LOCK_CLASS", "Migration", "connect_migrated", "migrate", "require", "versions"]

MIGRATION_LOCK_CLASS = 0x6D636D67
"""First key of the migration lock (``pg_advisory_xact_lock(MIGRATION_LOCK_CLASS, hashtext(schema))``)."""

LOCK_TIMEOUT = "120s"
"""How long a starting replica waits for another one's migration before giving up."""

_TYPES = {"real": "DOUBLE PRECISION", "blob": "BYTEA"}


@dataclass(frozen=True)
class Migration:
    """One numbered step of a component's schema.

    Attributes:
        version: 1, 2, ... (each component's versions are consecutive from 1).
        name: what it does, recorded in ``schema_version``.
        statements: SQL texts; ``{x}`` placeholders are filled from ``tables`` (schema-qualified,
            quoted), ``names`` (plain quoted identifiers, e.g. index names), ``{real}`` and ``{blob}``.
        tables: placeholder → table name in the schema.
        names: placeholder → identifier.
    """

    version: int
    name: str
    statements: tuple[str, ...]
    tables: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)


def _latest(component: str, migrations: Sequence[Migration]) -> int:
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise StoreError(f"the {component} migrations are not numbered 1..n in order: {numbers}")
    return len(numbers)


def _version_table(schema: str) -> Any:
    from psycopg import sql

    return sql.Identifier(schema, "schema_version")


def versions(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> dict[str, int] | None:
    """Each component's applied version in ``schema``; None when the schema has no ``schema_version``
    (never migrated: empty, or made before migrations existed). Reads only."""
    from psycopg import sql

    row = conn.execute("SELECT to_regclass(%s)", (_version_table(schema).as_string(conn),)).fetchone()
    if row is None or row[0] is None:
        return None
    rows = conn.execute(
        sql.SQL("SELECT component, max(version) FROM {} GROUP BY component").format(_version_table(schema))
    ).fetchall()
    return {str(component): int(version) for component, version in rows}


def _check_not_newer(schema: str, component: str, current: int, latest: int) -> None:
    if current > latest:
        raise StoreError(
            f"postgres schema `{schema}` has {component} at version {current}, newer than this"
            f" gateway's {latest}: upgrade the gateway (nothing was changed)"
        )


def migrate(
    conn: psycopg.Connection[tuple[Any, ...]],
    schema: str,
    component: str,
    migrations: Sequence[Migration],
    *,
    clock: Any = time.time,
) -> list[int]:
    """Apply ``component``'s missing migrations to ``schema`` (created if missing); returns the
    versions applied now (empty when it was up to date).

    Args:
        conn: an autocommit connection (the migration runs in a transaction of its own).

    Raises:
        StoreError: the schema is newer than ``migrations`` know, or they are misnumbered.
        psycopg.Error: the database refused (the caller maps it).
    """
    from psycopg import sql

    latest = _latest(component, migrations)
    known = versions(conn, schema)
    if known is not None and known.get(component, 0) >= latest:
        _check_not_newer(schema, component, known.get(component, 0), latest)
        return []
    table = _version_table(schema)
    applied: list[int] = []
    with conn.transaction():
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true), set_config('synchronous_commit', 'on', true)",
            (LOCK_TIMEOUT,),
        )
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK_CLASS, schema))
        # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE right even if it exists.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (component TEXT NOT NULL, version INTEGER NOT NULL,"
                " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (component, version))"
            ).format(table)
        )
        row = conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {} WHERE component = %s").format(table),
            (component,),
        ).fetchone()
        current = int(row[0]) if row is not None else 0
        _check_not_newer(schema, component, current, latest)
        for migration in migrations[current:]:
            fill: dict[str, Any] = {k: sql.Identifier(schema, v) for k, v in migration.tables.items()}
            fill |= {k: sql.Identifier(v) for k, v in migration.names.items()}
            fill |= {k: sql.SQL(v) for k, v in _TYPES.items()}
            for statement in migration.statements:
                conn.execute(sql.SQL(statement).format(**fill))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (component, version, name, applied_at) VALUES (%s, %s, %s, %s)"
                ).format(table),
                (component, migration.version, migration.name, float(clock())),
            )
            applied.append(migration.version)
    return applied


def require(
    conn: psycopg.Connection[tuple[Any, ...]], schema: str, component: str, migrations: Sequence[Migration]
) -> None:
    """Check, without writing, that ``component`` is set up in ``schema`` at this gateway's version.

    Raises:
        StoreError: never set up, behind (run ``mcp-gateway db migrate``), or newer than this gateway.
    """
    latest = _latest(component, migrations)
    current = (versions(conn, schema) or {}).get(component, 0)
    if current == 0:
        raise StoreError(
            f"no {component} store in postgres schema `{schema}` (nothing was ever written there)"
        )
    _check_not_newer(schema, component, current, latest)
    if current < latest:
        raise StoreError(
            f"postgres schema `{schema}` has {component} at version {current}, this gateway needs"
            f" {latest}: run `mcp-gateway db migrate`"
        )


def connect_migrated(
    dsn: str, schema: str, component: str, migrations: Sequence[Migration], *, connect_timeout: int = 5
) -> psycopg.Connection[tuple[Any, ...]]:
    """A new autocommit connection to ``schema`` with ``component`` migrated; closed again if that fails.

    Raises:
        psycopg.Error: unreachable, or the database refused (the caller maps it to its own error).
        StoreError: the schema is newer than this gateway.
    """
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    try:
        migrate(conn, schema, component, migrations)
    except BaseException:
        conn.close()  # not handed out: leave no connection behind
        raise
    return conn
