"""The dbt Core adapter running real ``dbt build`` on the local PostgreSQL over the demo project.

One seeded schema pair per module; each test makes its own adapter over the module's work dir.
Tests that only need a process that misbehaves use a small shell script as ``executable``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from dbt_support import PROJECT, DemoDbt, demo_dbt, write_script
from mcp_gateway.connectors.orchestrators.base import OrchestratorError, RunConflict
from mcp_gateway.connectors.orchestrators.config import DbtCoreSettings
from mcp_gateway.connectors.orchestrators.dbt_core import DbtCoreOrchestrator
from mcp_gateway.types import SecretValue

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

OPPORTUNITIES = "source:sales.opportunities+"
AT_MOST = "source_at_most_sales_opportunities_amount__5000000"
PASSWORD = "pw-canary-5b1f0e2d"


def _vault(name: str) -> SecretValue:
    assert name == "dbt-pg-password"
    return SecretValue(name, PASSWORD.encode())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoDbt]:
    with demo_dbt(tmp_path_factory.mktemp("dbt-demo")) as seeded:
        yield seeded


@pytest.fixture(scope="module")
def work(demo: DemoDbt, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's work dir, with the project parsed once: later runs reuse dbt's partial parse."""
    path = tmp_path_factory.mktemp("dbt-work")
    anyio.run(_adapter(demo.settings(), path).manifest)
    return path


def _adapter(settings: DbtCoreSettings, work: Path) -> DbtCoreOrchestrator:
    return DbtCoreOrchestrator(settings, _vault, work_dir=work)


async def test_a_build_failing_on_bad_source_data_gives_the_failed_test_its_sql_and_freshness(
    demo: DemoDbt, work: Path
) -> None:
    adapter = _adapter(demo.settings(), work)
    run = await adapter.rerun(OPPORTUNITIES, "full", "a1")
    assert (run.state, run.native_state) == ("failed", "fail")
    assert run.message is not None and f"{AT_MOST} (fail, 1 failing rows)" in run.message
    assert (await adapter.status(OPPORTUNITIES, run.run_id)).state == "failed"

    context = await adapter.failure_context(OPPORTUNITIES)
    assert [r.run_id for r in context.failed_runs] == [run.run_id]
    [node] = context.failed_nodes
    assert (node["name"], node["resource_type"], node["status"], node["failing_rows"]) == (
        AT_MOST,
        "test",
        "fail",
        1,
    )
    assert f'"{demo.raw}"."opportunities" where amount > 5000000' in node["compiled_sql"]
    assert node["depends_on"] == ["source.mcp_gateway_demo.sales.opportunities"]
    [fresh] = context.source_freshness
    assert fresh["source"] == "source.mcp_gateway_demo.sales.opportunities"
    assert fresh["status"] == "pass" and fresh["age_seconds"] < 12 * 3600
    assert any("Done. PASS=" in line for line in context.log_tail)


async def test_a_passing_build_repeated_with_its_key_returns_the_first_run_without_running_again(
    demo: DemoDbt, work: Path
) -> None:
    adapter = _adapter(demo.settings(), work)
    first = await adapter.rerun("stg_forecast", "full", "b2")
    invocations = demo.argv_log.read_text().count("\n")
    again = await adapter.rerun("stg_forecast", "full", "b2")
    assert (first.state, again.run_id, again.state) == ("success", first.run_id, "success")
    assert demo.argv_log.read_text().count("\n") == invocations
    relation = demo.rows("SELECT to_regclass('{target}.stg_forecast') IS NOT NULL")
    assert relation == [(True,)]


async def test_failed_only_retries_just_the_nodes_that_failed(demo: DemoDbt, work: Path) -> None:
    adapter = _adapter(demo.settings(), work)
    with pytest.raises(RunConflict, match="has not failed"):
        await adapter.rerun("stg_revenue", "failed_only", "c0")
    first = await adapter.launch("source:sales.revenue", "full", ["source:sales.revenue"], "c1")
    assert first["state"] == "failed" and len(first["nodes"]) == 3
    retry = await adapter.launch("source:sales.revenue", "failed_only", [], "c2")
    assert retry["run_id"] != first["run_id"]
    assert retry["state"] == "failed"
    assert list(retry["nodes"]) == [n["node"] for n in first["failed_nodes"]]
    assert "retry" in retry["command"]


async def test_a_project_that_does_not_compile_fails_with_dbts_error(demo: DemoDbt, tmp_path: Path) -> None:
    broken = tmp_path / "project"
    shutil.copytree(PROJECT, broken)
    (broken / "models" / "staging" / "stg_broken.sql").write_text("select * from {{ ref('no_such_model') }}")
    adapter = _adapter(demo.settings(project_dir=str(broken)), tmp_path / "work")
    run = await adapter.rerun("stg_broken", "full", "d1")
    assert (run.state, run.native_state) == ("failed", "error")
    assert run.message is not None and "no_such_model" in run.message


async def test_a_missing_dbt_is_a_clear_error_and_nothing_is_recorded(demo: DemoDbt, tmp_path: Path) -> None:
    adapter = _adapter(demo.settings(executable=str(tmp_path / "nope" / "dbt")), tmp_path)
    with pytest.raises(OrchestratorError, match=r"dbt executable `.*nope/dbt` not found: install dbt-core"):
        await adapter.rerun(OPPORTUNITIES, "full", "e1")
    with pytest.raises(OrchestratorError, match="not a dbt selector"):
        await _adapter(demo.settings(), tmp_path).rerun("--profiles-dir /etc", "full", "e2")


async def test_a_run_over_its_timeout_is_killed_and_reported_failed(demo: DemoDbt, tmp_path: Path) -> None:
    stuck = write_script(tmp_path / "dbt", "exec sleep 60")
    adapter = _adapter(demo.settings(executable=str(stuck), timeout_seconds=0.5), tmp_path / "work")
    started = time.monotonic()
    run = await adapter.rerun(OPPORTUNITIES, "full", "f1")
    assert time.monotonic() - started < 10
    assert (run.state, run.native_state) == ("failed", "timeout")
    assert run.message == "timed out after 0.5s and was stopped"


async def test_dbt_gets_the_secret_in_its_environment_only_and_none_of_the_gateways(
    demo: DemoDbt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_GATEWAY_CANARY", "gateway-only")
    seen = tmp_path / "seen"
    spy = write_script(
        tmp_path / "dbt", f'printf "%s\\n" "$@" > "{seen}.argv"\nenv > "{seen}.env"\necho "{PASSWORD}"'
    )
    settings = demo.settings(
        executable=str(spy), secret_env={"DBT_ENV_SECRET_PG_PASSWORD": "secret://dbt-pg-password"}
    )
    run = await _adapter(settings, tmp_path / "work").rerun(OPPORTUNITIES, "full", "9a1")
    env = dict(line.split("=", 1) for line in Path(f"{seen}.env").read_text().splitlines() if "=" in line)
    assert env["DBT_ENV_SECRET_PG_PASSWORD"] == PASSWORD
    assert "MCP_GATEWAY_CANARY" not in env
    assert (env["DBT_SEND_ANONYMOUS_USAGE_STATS"], env["DBT_VERSION_CHECK"]) == ("false", "false")
    assert PASSWORD not in Path(f"{seen}.argv").read_text()
    # The spy printed the password: what the gateway keeps of dbt's output has it replaced.
    output = next((tmp_path / "work" / "runs").glob("*/output.log")).read_text()
    assert PASSWORD not in output and "[redacted]" in output
    assert PASSWORD not in repr(run)
