"""The demo dbt project on the local PostgreSQL, seeded under schemas unique to one test module.

dbt Core lives in its own virtualenv (``.venv-dbt``, made by ``scripts/setup``): its pinned
dependencies conflict with the gateway's. ``wrapper`` is a ``dbt`` that first appends its argv to a
file, so tests can show what was on the command line of every real invocation.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings
from mcp_gateway.connectors.warehouse.config import PostgresSettings
from mcp_gateway.demo.lake import seed_demo

ROOT = Path(__file__).resolve().parents[1]
DBT = ROOT / ".venv-dbt" / "bin" / "dbt"
PROJECT = ROOT / "src" / "mcp_gateway" / "demo" / "dbt_project"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@dataclass
class DemoDbt:
    """The seeded demo: raw tables in ``raw``, models built into ``target`` (gates: ``target__gate_*``)."""

    raw: str
    target: str
    wrapper: Path
    argv_log: Path

    def settings(self, **overrides: Any) -> DbtCoreSettings:
        spec: dict[str, Any] = {
            "kind": "dbt_core",
            "project_dir": str(PROJECT),
            "executable": str(self.wrapper),
            "env": {"DBT_PG_SCHEMA": self.target},
            "vars": {"source_schema": self.raw},
            "timeout_seconds": 120,
        }
        return DbtCoreSettings.model_validate({**spec, **overrides})

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_DSN) as conn:
            return list(conn.execute(query.format(raw=self.raw, target=self.target)).fetchall())


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def demo_dbt(work: Path) -> Iterator[DemoDbt]:
    """Seed the demo stories into fresh schemas, yield them, then drop every schema the run made."""
    if not DBT.is_file():
        pytest.fail("dbt Core is not installed: run scripts/setup (it creates .venv-dbt)")
    tag = f"dbt{uuid.uuid4().hex[:8]}"
    argv_log = work / "dbt-argv.log"
    wrapper = write_script(work / "dbt", f'printf "%s\\n" "$*" >> "{argv_log}"\nexec "{DBT}" "$@"')
    seed_demo(PostgresSettings(dsn=PG_DSN, schema=f"{tag}_sales"))
    try:
        yield DemoDbt(f"{tag}_sales", f"{tag}_analytics", wrapper, argv_log)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            found = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [tag]
            ).fetchall()
            for (schema,) in found:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
