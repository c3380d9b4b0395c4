"""`mcp-gateway demo heal` as a user runs it: `quickstart --postgres` serving, an admin token made with
`admin create`, then the demo playing the agent (its token) and the human approver (the admin token),
one line a step; and the one-line answers (exit 2) when PostgreSQL, dbt or the admin token is missing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner, Result

from conftest import free_port, wait_until
from dbt_support import DBT, PG_DSN
from mcp_gateway.cli import app
from mcp_gateway.demo.lake import FAT_FINGER_ID

pytestmark = pytest.mark.e2e

EXE = Path(sys.executable).parent / "mcp-gateway"
AT_MOST = "source_at_most_sales_opportunities_amount__5000000"
runner = CliRunner()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "MCP_GATEWAY_ADMIN_TOKEN"}
    return subprocess.run(
        [str(EXE), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, **(env or {})},
        check=False,
    )


def _run(*args: str, token: str | None = None) -> Result:
    """The CLI in this process (the one-line refusals need no server): exit code, stdout, stderr."""
    return runner.invoke(app, list(args), env={"MCP_GATEWAY_ADMIN_TOKEN": token})


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _drop_schemas(prefix: str) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        found = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [prefix]
        ).fetchall()
        for (schema,) in found:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A quickstart with `--postgres` serving in its own process; yields (its folder, its schema)."""
    if not DBT.is_file():
        pytest.fail("dbt Core is not installed: run scripts/setup (it creates .venv-dbt)")
    directory = tmp_path_factory.mktemp("qs-heal") / "demo"
    schema = f"heal{uuid.uuid4().hex[:8]}"
    port = free_port()
    while not (_free(port + 1) and _free(port + 2)):
        port = free_port()
    log = (directory.parent / "quickstart.log").open("w")
    command = ["quickstart", "--dir", str(directory), "--port", str(port)]
    command += ["--postgres", PG_DSN, "--postgres-schema", schema, "--dbt", str(DBT)]
    proc = subprocess.Popen([str(EXE), *command], stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="quickstart gateway")
        yield directory, schema
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        _drop_schemas(schema)


def test_demo_heal_plays_the_whole_loop_one_line_a_step_with_the_human_approving_by_admin_token(
    quickstart: tuple[Path, str],
) -> None:
    directory, schema = quickstart
    config = str(directory / "gateway.yaml")
    admin = _cli("admin", "create", "you", "-c", config)
    assert admin.returncode == 0, admin.stderr
    done = _cli(
        "demo", "heal", "--dir", str(directory), env={"MCP_GATEWAY_ADMIN_TOKEN": admin.stdout.strip()}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line[:9] for line in lines] == [f"[{n:>2}/12] ✓" for n in range(1, 13)], done.stdout
    step = {re.match(r"\[\s*\d+/12\] ✓ (\S+)", line).group(1): line for line in lines}  # type: ignore[union-attr]
    assert f"failed: 1 of 8 nodes failed: {AT_MOST} (fail, 1 failing rows)" in step["build"]
    assert (
        f"open: max(amount) = 10,000,000 (at most 5,000,000) on pg.{schema}.opportunities" in step["monitor"]
    )
    assert (
        f"test {AT_MOST} (1 failing rows); freshness: sales.opportunities pass; incidents: 1 open"
        in (step["context"])
    )
    assert f"→ id {FAT_FINGER_ID} 'Initech platform' 10,000,000" in step["find"]
    assert "the largest other deal is 1,200,000" in step["compare"]
    approval = re.search(r"(apr_[\w-]+)", step["dbt"])
    assert (
        approval is not None and "dbt tests `source:sales.opportunities+` passed on the branch" in step["dbt"]
    )
    assert (
        f"admin `you`, token from $MCP_GATEWAY_ADMIN_TOKEN) approved {approval.group(1)}" in step["approve"]
    )
    assert "fct_pipeline_by_stage, stg_opportunities rebuilt and tested: success" in step["downstream"]
    assert "recovered; resolution: demo-agent data.switch_in" in step["quality"]
    with psycopg.connect(PG_DSN) as conn:
        won = conn.execute(
            sql.SQL("SELECT amount FROM {} WHERE stage = 'won'").format(
                sql.Identifier(f"{schema}_analytics", "fct_pipeline_by_stage")
            )
        ).fetchall()
    assert won == [(1_250_000.0,)]
    verified = _cli("audit", "verify", "-c", config)
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr


def test_demo_heal_without_an_admin_token_says_so_in_one_line(quickstart: tuple[Path, str]) -> None:
    directory, _ = quickstart
    done = _run("demo", "heal", "--dir", str(directory))
    assert done.exit_code == 2
    assert done.stderr.startswith(
        "error: demo heal plays the human approver too: export MCP_GATEWAY_ADMIN_TOKEN"
    )
    assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_demo_heal_against_a_quickstart_without_postgres_says_what_to_run_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("data_dir: data\nserver: {port: 1}\n", encoding="utf-8")
    (tmp_path / "demo-agent.token").write_text("mgw_unused\n", encoding="utf-8")
    done = _run("demo", "heal", "--dir", str(tmp_path), token="unused")
    assert done.exit_code == 2
    assert (
        "runs without PostgreSQL, which dbt Core needs: restart it as `mcp-gateway quickstart --postgres"
        in (done.stderr)
    )
    assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_quickstart_postgres_names_an_unreachable_database_or_a_missing_dbt_in_one_line_and_changes_nothing(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "demo"
    password = "hunter2-not-shown"
    down = f"host=127.0.0.1 port={free_port()} user=postgres password={password} dbname=test"
    start = ["quickstart", "--dir", str(directory), "--no-serve", "--postgres"]
    unreachable = _run(*start, down, "--dbt", str(DBT))
    no_dbt = _run(*start, PG_DSN, "--dbt", "/nonexistent/dbt")
    assert (unreachable.exit_code, no_dbt.exit_code) == (2, 2)
    assert unreachable.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:")
    assert (
        "(dbt Core needs it)" in unreachable.stderr
        and password not in unreachable.stderr + unreachable.stdout
    )
    assert no_dbt.stderr.startswith(
        "error: dbt Core not found (`/nonexistent/dbt` is not an executable file)"
    )
    assert [r.stderr.count("\n") for r in (unreachable, no_dbt)] == [1, 1]
    assert not directory.exists()


def test_quickstart_takes_the_dsn_from_the_environment_so_a_password_stays_off_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "hunter3-not-shown"
    monkeypatch.setenv(
        "MCP_GATEWAY_DEMO_POSTGRES",
        f"host=127.0.0.1 port={free_port()} user=postgres password={password} dbname=test",
    )
    directory = tmp_path / "demo"
    result = _run("quickstart", "--dir", str(directory), "--no-serve", "--dbt", str(DBT))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:")
    assert password not in result.stderr + result.stdout
    assert not directory.exists()
