"""``quickstart --postgres DSN``: the self-healing loop's part of the demo, on PostgreSQL and dbt Core.

dbt Core needs a real database, so the embedded quickstart (an Iceberg lake on SQLite) gains these only
when a PostgreSQL DSN is given:

- a warehouse ``pg`` whose schema (``--postgres-schema``, default ``mcp_gateway_demo``) holds the three
  demo tables, reset on every start together with what earlier runs left there (branch relations, and
  the dbt model schemas ``<schema>_analytics`` and ``<schema>_analytics__gate_*``);
- a ``dbt_core`` orchestrator ``dbt_core`` on the package's demo dbt project, and the job
  ``sales_pipeline`` (``dbt build --select source:sales.opportunities+``);
- a monitor ``deal_amounts`` (no opportunity over 5,000,000; every 5 s; linked to the job);
- ``policies/dbt-heal.yaml``: what ``demo-agent`` may do in the loop, and the table rule that makes a
  switch-in of ``opportunities`` pass the dbt tests on the branch and then wait for a human.

The DSN goes into the vault (``demo-pg-dsn``: it may carry a password), never into ``gateway.yaml``;
dbt gets the host, port, user and database as plain variables and the password, if any, from the vault
(``DBT_ENV_SECRET_PG_PASSWORD``). PostgreSQL and dbt are checked before anything changes; what is
missing is named in one line (``PrerequisiteMissing``; the CLI exits 2).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mcp_gateway.errors import ConfigError
from mcp_gateway.vault.service import Vault

WAREHOUSE = "pg"
PROJECT = "dbt_core"
JOB = "sales_pipeline"
MONITOR = "deal_amounts"
SELECT = "source:sales.opportunities+"
MAX_DEAL = 5_000_000
DSN_SECRET = "demo-pg-dsn"  # noqa: S105 - a vault entry's name, not a secret
PASSWORD_SECRET = "demo-pg-password"  # noqa: S105 - a vault entry's name, not a password
POLICY_FILE = "dbt-heal.yaml"
DEFAULT_SCHEMA = "mcp_gateway_demo"
LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PROJECT_DIR = Path(__file__).parent / "dbt_project"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_DEMO_TABLES = ("opportunities", "revenue", "us_forecast_dec_v1")


class _Plain(yaml.SafeDumper):
    """Writes a shared value out each time, so the file reads without YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class PrerequisiteMissing(ConfigError):
    """PostgreSQL or dbt Core, which the self-healing demo needs, is missing or unreachable."""


@dataclass(frozen=True)
class PgDemo:
    """Where the loop runs: a reachable PostgreSQL (``dsn``, schema ``schema``) and a ``dbt`` program."""

    dsn: str = field(repr=False)
    schema: str
    dbt: Path
    parts: dict[str, str] = field(repr=False, default_factory=dict)
    """The DSN's host, port, user, dbname and password (libpq's names)."""

    @property
    def analytics(self) -> str:
        """The schema dbt builds the models into."""
        return f"{self.schema}_analytics"

    @property
    def table(self) -> str:
        """The table of the story, as agents name it."""
        return f"{WAREHOUSE}.{self.schema}.opportunities"


def find_dbt(given: Path | None) -> Path:
    """The ``dbt`` program: ``given``, else ``.venv-dbt/bin/dbt`` in the working directory or the
    checkout holding this package, else ``dbt`` on ``PATH``.

    Raises:
        PrerequisiteMissing: none of them is an executable file.
    """
    checkout = Path(__file__).resolve().parents[3]
    candidates = [given] if given is not None else [Path(".venv-dbt/bin/dbt"), checkout / ".venv-dbt/bin/dbt"]
    for path in candidates:
        if path.is_file() and path.stat().st_mode & 0o111:
            return path.resolve()
    if given is None and (on_path := shutil.which("dbt")) is not None:
        return Path(on_path)
    where = f"`{given}` is not an executable file" if given else "no .venv-dbt/bin/dbt here, no `dbt` on PATH"
    raise PrerequisiteMissing(
        f"dbt Core not found ({where}): scripts/setup creates .venv-dbt (or pip install"
        " dbt-core==1.11.16 dbt-postgres==1.11.0 in a venv of its own), or pass --dbt PATH"
    )


def connect_check(dsn: str, schema: str, dbt: Path) -> PgDemo:
    """A ``PgDemo`` once PostgreSQL answers at ``dsn`` and ``schema`` is a plain lowercase name.

    Raises:
        PrerequisiteMissing: psycopg is not installed, or PostgreSQL cannot be reached (the message
            names the host, port and database, never a password).
        ConfigError: a schema name that is not ``[a-z_][a-z0-9_]*`` (at most 40 characters).
    """
    if not _SCHEMA.match(schema):
        raise ConfigError(f"--postgres-schema `{schema}`: use lowercase letters, digits and `_` (at most 40)")
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise PrerequisiteMissing(
            "PostgreSQL support is not installed: pip install 'mcp-gateway[postgres]'"
        ) from None
    try:
        parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.ProgrammingError:
        raise PrerequisiteMissing("--postgres is not a PostgreSQL connection string or URL") from None
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if parts.get("password"):
            said = said.replace(parts["password"], "[redacted]")
        raise PrerequisiteMissing(f"cannot reach PostgreSQL at {where} (dbt Core needs it): {said}") from None
    return PgDemo(dsn, schema, dbt, parts)


def store_secrets(vault: Vault, demo: PgDemo) -> None:
    """The DSN (and its password, for dbt) into the vault; a password no longer in the DSN is removed."""
    vault.put(DSN_SECRET, demo.dsn.encode())
    if demo.parts.get("password"):
        vault.put(PASSWORD_SECRET, demo.parts["password"].encode())
    else:
        vault.delete(PASSWORD_SECRET)


def config_sections(demo: PgDemo) -> dict[str, str]:
    """``gateway.yaml`` lines, indented for the ``warehouses``, ``orchestrators``, ``jobs`` sections and a
    top-level ``monitors`` section (``quickstart_files.gateway_yaml`` places them)."""
    env = {
        name: demo.parts[key]
        for name, key in (
            ("DBT_PG_HOST", "host"),
            ("DBT_PG_PORT", "port"),
            ("DBT_PG_USER", "user"),
            ("DBT_PG_DBNAME", "dbname"),
        )
        if demo.parts.get(key)
    }
    dbt: dict[str, Any] = {
        "kind": "dbt_core",
        "project_dir": str(PROJECT_DIR),
        "executable": str(demo.dbt),
        "env": {**env, "DBT_PG_SCHEMA": demo.analytics},
        "vars": {"source_schema": demo.schema},
        "timeout_seconds": 300,
    }
    if demo.parts.get("password"):
        dbt["secret_env"] = {"DBT_ENV_SECRET_PG_PASSWORD": f"secret://{PASSWORD_SECRET}"}
    monitor = {
        "table": demo.table,
        "checks": [{"metric": "max", "column": "amount", "max": MAX_DEAL}],
        "every_seconds": 5,
        "job": JOB,
    }

    def block(name: str, body: Any, comment: str) -> str:
        text = yaml.safe_dump({name: body}, sort_keys=False, width=120)
        return f"  # {comment}\n" + "".join(f"  {line}\n" for line in text.splitlines())

    return {
        "warehouses": block(
            WAREHOUSE,
            {"kind": "postgres", "dsn": f"secret://{DSN_SECRET}", "schema": demo.schema},
            "quickstart --postgres: the DSN is in the vault (it may hold a password)",
        ),
        "orchestrators": block(PROJECT, dbt, "dbt Core on the package's demo dbt project (a subprocess)"),
        "jobs": f'  {JOB}: {{orchestrator: {PROJECT}, id: "{SELECT}"}}   # the nightly dbt build\n',
        "monitors": "monitors:\n" + block(MONITOR, monitor, "the gateway measures this itself, every 5 s"),
    }


def heal_policy(demo: PgDemo) -> str:
    """``policies/dbt-heal.yaml``: the demo agent's grants for the loop and the table's switch-in rule."""
    table = rf"{WAREHOUSE}\.{demo.schema}\..+"
    on_table = {"table": {"pattern": table, "required": True}}
    on_branch = {**on_table, "branch": {"pattern": "agent_[a-z0-9_]+", "required": True}}
    read = {"tables": [f"{WAREHOUSE}.{demo.schema}.*"], "production": True}
    job = {"job": {"in": [JOB], "required": True}}
    grants: list[dict[str, Any]] = [
        {"id": "heal-build", "tool": "ops.rerun_job", "args": job, "rate": ["20/hour"]},
        {"id": "heal-job-read", "tool": "ops.get_*", "args": job},
        {"id": "heal-incidents", "tool": "resource:gateway:incident://*"},
        {"id": "heal-sample", "tool": "data.sample_rows", "args": on_table, "max_rows": 20, "read": read},
        {
            "id": "heal-query",
            "tool": "data.query",
            "args": {"warehouse": {"in": [WAREHOUSE], "required": True}},
            "max_rows": 20,
            "read": {**read, "timeout_ms": 5000},
        },
        {"id": "heal-branch", "tool": "data.clone_table", "args": on_branch},
        {"id": "heal-write", "tool": "data.update_rows", "args": on_branch, "max_rows": 10},
        {"id": "heal-switch", "tool": "data.switch_in", "args": on_branch},
        {"id": "heal-discard", "tool": "data.discard_branch", "args": on_branch},
        {
            "id": "heal-downstream",
            "tool": "ops.rerun_downstream",
            "args": {"project": {"in": [PROJECT], "required": True}, **on_table},
            "rate": ["10/hour"],
        },
    ]
    document = {
        "version": 1,
        "agents": {"demo-agent": {"grants": grants}},
        "tables": {
            demo.table: {
                "switch_in_dbt": {"project": PROJECT, "select": SELECT},
                "switch_in_approval": True,
            }
        },
        "runbooks": {
            JOB: (
                "A failing source test means bad rows landed: find them, fix them on a branch, let the dbt"
                " tests pass there, ask a human to switch in, then re-run the models downstream."
            )
        },
    }
    header = (
        "# Written by `quickstart --postgres` on every start (edits here are replaced): the self-healing\n"
        "# loop. Named to sort before demo.yaml: a call takes the first grant whose argument limits it\n"
        "# passes, and demo.yaml's read grants take any table.\n"
    )
    return header + yaml.dump(document, Dumper=_Plain, sort_keys=False, width=100)


def reset(demo: PgDemo) -> None:
    """Drop what earlier runs left in the demo's schemas (the seed then recreates the tables)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(demo.dsn, autocommit=True) as conn:
        branches = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE ANY(%s)",
            [demo.schema, [f"{t}\\_\\_branch\\_\\_%" for t in _DEMO_TABLES]],
        ).fetchall()
        for (name,) in branches:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(demo.schema, name)))
        built = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
            [demo.analytics, demo.analytics.replace("_", "\\_") + "\\_\\_gate\\_%"],
        ).fetchall()
        for (schema,) in built:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def write_policy(policies: Path, demo: PgDemo | None) -> None:
    """Write ``dbt-heal.yaml`` for ``demo``, or remove it when the quickstart runs without PostgreSQL."""
    path = policies / POLICY_FILE
    if demo is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(heal_policy(demo), encoding="utf-8")
