"""The read side of a warehouse, for ``data.sample_rows`` and ``data.query``: one Protocol, three backends.

A ``Reader`` names a table's columns (on a branch or production), says which physical relation a
table reads (``physical``), and runs either a checked ``QueryPlan`` (``sqlcheck.py``) or a sample
(structured predicates, no SQL from the agent). Both return at most ``max_rows`` rows, as plain JSON
values; masking is the caller's (``tools/data_read.py``), over the rows returned here.

    PostgreSQL  a READ ONLY transaction, ``SET LOCAL statement_timeout``, ``search_path`` pinned to
                ``pg_catalog`` (unqualified names then reach no user table)
    Iceberg     each table read is the branch head's (or main's) snapshot, scanned with pyiceberg (only
                the readable columns) into an in-memory DuckDB with no external access; samples are a
                pyiceberg scan with a row filter and a limit (no SQL at all)
    Snowflake   ``STATEMENT_TIMEOUT_IN_SECONDS`` for the session; the generated SQL is tested as text
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_gateway.connectors.warehouse.base import Predicate
from mcp_gateway.connectors.warehouse.config import IcebergSettings, PostgresSettings, SnowflakeSettings
from mcp_gateway.connectors.warehouse.open import expand_secrets, snowflake_args
from mcp_gateway.connectors.warehouse.sqlcheck import QueryPlan, TableRef
from mcp_gateway.types import SecretValue

HARD_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Rows:
    """What a read returned: column names and rows (at most the ``max_rows`` asked for)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class Reader(Protocol):
    """One warehouse's read side. Methods are synchronous (the tools run them in a worker thread).

    ``branch`` None means production. Every method raises ``WarehouseError`` subclasses.
    """

    dialect: str
    default_timeout_ms: int

    def columns(self, refs: Sequence[TableRef], branch: str | None) -> dict[TableRef, list[str]]:
        """Each table's columns in order (``UnknownTable`` for a missing table or branch)."""
        ...

    def physical(self, ref: TableRef, branch: str | None) -> list[str]:
        """The name parts of the relation ``ref`` reads on ``branch`` (``UnknownTable`` if hidden)."""
        ...

    def run_query(
        self,
        plan: QueryPlan,
        branch: str | None,
        columns: Mapping[TableRef, Sequence[str]],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        """Run a checked plan; at most ``max_rows`` rows (``QueryRefused("timeout")`` on the timeout)."""
        ...

    def sample(
        self,
        ref: TableRef,
        branch: str | None,
        where: Sequence[Predicate],
        columns: Sequence[str],
        max_rows: int,
        timeout_ms: int,
    ) -> Rows:
        """Rows of ``ref`` matching every predicate, only ``columns``, at most ``max_rows``."""
        ...

    def close(self) -> None:
        """Release what the reader holds."""
        ...


def open_reader(
    settings: IcebergSettings | PostgresSettings | SnowflakeSettings,
    resolve_secret: Callable[[str], SecretValue] | None,
) -> Reader:
    """The reader for a ``warehouses:`` entry, its secrets resolved now."""
    if isinstance(settings, IcebergSettings):
        from mcp_gateway.connectors.warehouse.read_iceberg import IcebergReader

        uri = expand_secrets(settings.catalog_uri, resolve_secret)
        return IcebergReader.connect(uri, settings.warehouse, settings.catalog_name)
    if isinstance(settings, PostgresSettings):
        from mcp_gateway.connectors.warehouse.read_postgres import PostgresReader

        dsn = expand_secrets(settings.dsn, resolve_secret)
        return PostgresReader(dsn, settings.schema_name, settings.statement_timeout_ms)
    from mcp_gateway.connectors.warehouse.read_snowflake import SnowflakeReader

    return SnowflakeReader(settings.database, settings.schema_name, snowflake_args(settings, resolve_secret))
