"""dbt Core through the real gateway: dbt tests gating ``data.switch_in``, ``ops.rerun_downstream``, and
the failure context of a dbt job, with the profile's password held in the vault.

One gateway and one seeded PostgreSQL demo per module (dbt runs take seconds each). Every test makes
its own branch, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import RunningGateway, connect, gateways
from dbt_support import PG_DSN, DemoDbt, demo_dbt
from mcp_gateway.demo.lake import FAT_FINGER_ID

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

AT_MOST = "source_at_most_sales_opportunities_amount__5000000"
PASSWORD = "vault-pg-pw-7c41d9aa"
FIX = [{"column": "id", "op": "=", "value": FAT_FINGER_ID}]


def _policy(demo: DemoDbt) -> str:
    table = f"pg.{demo.raw}.opportunities"
    fixer = [
        {"id": f"fx-{tool}", "tool": tool}
        for tool in (
            "data.clone_table",
            "data.update_rows",
            "data.switch_in",
            "ops.rerun_job",
            "ops.get_failure_context",
        )
    ]
    fixer.append(
        {
            "id": "fx-downstream",
            "tool": "ops.rerun_downstream",
            "args": {"project": {"in": ["dbt"]}, "table": {"pattern": r"pg\..+\.opportunities"}},
        }
    )
    careful = [{"id": "careful-downstream", "tool": "ops.rerun_downstream", "approval": "required"}]
    document = {
        "version": 1,
        "agents": {"fixer": {"grants": fixer}, "careful": {"grants": careful}},
        "tables": {table: {"switch_in_dbt": {"project": "dbt", "select": "source:sales.opportunities+"}}},
    }
    return yaml.safe_dump(document)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoDbt]:
    with demo_dbt(tmp_path_factory.mktemp("dbt-demo")) as seeded:
        yield seeded


@pytest.fixture(scope="module")
def gw(demo: DemoDbt, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    # Freshness in the failure context is shown in test_dbt_core_runs.py: one dbt invocation less here.
    dbt = demo.settings(
        secret_env={"DBT_ENV_SECRET_PG_PASSWORD": "secret://dbt-pg-password"}, source_freshness=False
    )
    config = {
        "warehouses": {"pg": {"kind": "postgres", "dsn": PG_DSN, "schema": demo.raw}},
        "orchestrators": {"dbt": dbt.model_dump(exclude_none=True)},
        "jobs": {"revenue": {"orchestrator": "dbt", "id": "source:sales.revenue"}},
    }
    with gateways(tmp_path_factory.mktemp("gw")) as factory:
        yield factory(
            _policy(demo),
            agents=("fixer", "careful"),
            upstreams={},
            secrets={"dbt-pg-password": PASSWORD},
            config=config,
            watch_policy=False,
        )


def _body(result: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.content[0].text)
    return parsed


def _facts(gw: RunningGateway, tool: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.status, r.detail.get("facts", {})) for r in gw.audit() if r.kind == "outcome" and r.tool == tool
    ]


def _run_dirs(gw: RunningGateway) -> set[str]:
    runs = gw.settings.data_dir / "dbt" / "dbt" / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


def _opportunities(demo: DemoDbt) -> list[tuple[Any, ...]]:
    return demo.rows("SELECT id, amount FROM {raw}.opportunities ORDER BY id")


async def test_a_switch_in_whose_branch_fails_the_dbt_tests_is_refused_and_audited(
    demo: DemoDbt, gw: RunningGateway
) -> None:
    table = f"pg.{demo.raw}.opportunities"
    before = _opportunities(demo)
    async with connect(gw.url, gw.tokens["fixer"]) as client:
        await client.call_tool("data.clone_table", {"table": table, "branch": "bad"})
        # The agent's "fix" is wrong: the amount grows instead of shrinking.
        await client.call_tool(
            "data.update_rows", {"table": table, "branch": "bad", "where": FIX, "set": {"amount": 2e7}}
        )
        refused = await client.call_tool("data.switch_in", {"table": table, "branch": "bad"})
    assert refused.is_error
    assert f"failing dbt tests: {AT_MOST} (fail, 1 failing rows)" in refused.content[0].text
    assert _opportunities(demo) == before
    status, facts = _facts(gw, "data.switch_in")[-1]
    assert status == "error"
    assert facts["dbt_tests"]["passed"] is False
    assert [(t["name"], t["failing_rows"]) for t in facts["dbt_tests"]["failed_tests"]] == [(AT_MOST, 1)]


async def test_a_switch_in_passes_the_dbt_tests_after_the_fix_without_touching_production_models(
    demo: DemoDbt, gw: RunningGateway
) -> None:
    table = f"pg.{demo.raw}.opportunities"
    async with connect(gw.url, gw.tokens["fixer"]) as client:
        await client.call_tool("data.clone_table", {"table": table, "branch": "fix"})
        await client.call_tool(
            "data.update_rows", {"table": table, "branch": "fix", "where": FIX, "set": {"amount": 1e6}}
        )
        switched = await client.call_tool("data.switch_in", {"table": table, "branch": "fix"})
    assert not switched.is_error, switched.content[0].text
    assert dict(_opportunities(demo))[FAT_FINGER_ID] == 1e6
    status, facts = _facts(gw, "data.switch_in")[-1]
    assert (status, facts["dbt_tests"]["passed"], facts["dbt_tests"]["failed_tests"]) == ("ok", True, [])
    # The gate built the models from the branch into a schema of their own.
    won = demo.rows("SELECT amount FROM {target}__gate_fix.fct_pipeline_by_stage WHERE stage = 'won'")
    assert won == [(1_250_000.0,)]


async def test_rerun_downstream_builds_exactly_the_models_downstream_of_the_table(
    demo: DemoDbt, gw: RunningGateway
) -> None:
    table = f"pg.{demo.raw}.opportunities"
    args = {"project": "dbt", "table": table, "reason": "INC-7: amount fixed on a branch"}
    async with connect(gw.url, gw.tokens["fixer"]) as client:
        first = await client.call_tool("ops.rerun_downstream", args)
        again = await client.call_tool(
            "ops.rerun_downstream", {**args, "reason": " inc-7:  AMOUNT fixed on a branch"}
        )
        denied = await client.call_tool("ops.rerun_downstream", {**args, "table": f"pg.{demo.raw}.revenue"})
    body = _body(first)
    assert not first.is_error, first.content[0].text
    assert (body["models"], body["state"]) == (["fct_pipeline_by_stage", "stg_opportunities"], "success")
    assert (_body(again)["run_id"], _body(again)["already_launched"]) == (body["run_id"], True)
    assert denied.is_error
    run = json.loads(
        (gw.settings.data_dir / "dbt" / "dbt" / "runs" / body["run_id"] / "run.json").read_text()
    )
    built = {node for node in run["nodes"] if node.startswith("model.")}
    assert built == {
        "model.mcp_gateway_demo.fct_pipeline_by_stage",
        "model.mcp_gateway_demo.stg_opportunities",
    }
    mart = demo.rows("SELECT stage, amount FROM {target}.fct_pipeline_by_stage ORDER BY stage")
    raw = demo.rows("SELECT stage, sum(amount) FROM {raw}.opportunities GROUP BY stage ORDER BY stage")
    assert mart == raw
    assert _facts(gw, "ops.rerun_downstream")[0][1]["models"] == body["models"]


async def test_rerun_downstream_waits_for_a_human_when_the_grant_says_so(
    demo: DemoDbt, gw: RunningGateway
) -> None:
    before = _run_dirs(gw)
    args = {"project": "dbt", "table": f"pg.{demo.raw}.opportunities", "reason": "INC-8"}
    async with connect(gw.url, gw.tokens["careful"]) as client:
        parked = await client.call_tool("ops.rerun_downstream", args)
    assert parked.is_error and _body(parked)["status"] == "pending_approval"
    assert _run_dirs(gw) == before


async def test_the_profile_password_from_the_vault_appears_in_no_answer_audit_log_file_or_argv(
    demo: DemoDbt, gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with connect(gw.url, gw.tokens["fixer"]) as client:
        run = await client.call_tool("ops.rerun_job", {"job": "revenue", "mode": "full", "reason": "INC-9"})
        context = await client.call_tool("ops.get_failure_context", {"job": "revenue"})
    assert _body(run)["state"] == "failed"
    [node] = _body(context)["failed_nodes"]
    assert (node["name"], node["failing_rows"]) == ("source_accepted_values_sales_revenue_currency__USD", 1)
    assert f'"{demo.raw}"."revenue"' in node["compiled_sql"]
    assert "source_freshness" not in _body(context)

    answers = " ".join(r.content[0].text for r in (run, context))
    assert PASSWORD not in answers
    assert PASSWORD not in repr(gw.audit())
    assert PASSWORD not in caplog.text
    assert PASSWORD not in demo.argv_log.read_text()
    assert demo.argv_log.read_text().count("\n") >= 2  # dbt did run: the scan below has something to scan
    leaked = [
        p
        for p in Path(gw.settings.data_dir).rglob("*")
        if p.is_file() and PASSWORD.encode() in p.read_bytes()
    ]
    assert leaked == []
